//! The FFI shell: everything `unsafe` and `extern "C"` in the extension.
//!
//! PHP calls the nine `ps_module` callbacks below; each converts PHP's
//! strings, calls the process's [`SessionStore`] (crate `memcast-session`)
//! inside `catch_unwind` (a panic never crosses into PHP), and turns an error
//! into exactly one PHP warning.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ext_php_rs::builders::ModuleBuilder;
use ext_php_rs::flags::IniEntryPermission;
use ext_php_rs::types::ZendStr;
use ext_php_rs::zend::{IniEntryDef, IniEntryDefs, ModuleEntry, StaticModuleEntry};
use memcast_core::ini::{ExtensionConfig, SETTINGS};
use memcast_session::{ProcessStore, SessionError, SessionStore};

mod bindings {
    #![allow(
        non_camel_case_types,
        non_snake_case,
        non_upper_case_globals,
        dead_code,
        unnecessary_transmutes
    )]
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/php_bindings.rs"));
}
use bindings::*;

const SUCCESS: zend_result = ZEND_RESULT_CODE_SUCCESS;
const FAILURE: zend_result = ZEND_RESULT_CODE_FAILURE;

// ---------------------------------------------------------------- module ---

/// The memcast module depends on the session module (it must start first,
/// and `memcast` needs `php_session_register_module`).
struct Deps([zend_module_dep; 2]);
// SAFETY: the table only holds pointers to 'static C strings and is read-only.
unsafe impl Sync for Deps {}
static DEPS: Deps = Deps([
    zend_module_dep {
        name: c"session".as_ptr(),
        rel: ptr::null(),
        version: ptr::null(),
        type_: MODULE_DEP_REQUIRED as u8,
    },
    zend_module_dep {
        name: ptr::null(),
        rel: ptr::null(),
        version: ptr::null(),
        type_: 0,
    },
]);

macro_rules! ini_table {
    ($($i:literal)*) => {
        IniEntryDefs::new([
            $(IniEntryDef {
                on_modify: Some(on_modify_memcast_setting),
                ..IniEntryDef::new(SETTINGS[$i].name, SETTINGS[$i].default, IniEntryPermission::All)
            },)*
            IniEntryDef::end(),
        ])
    };
}
const _: () = assert!(
    SETTINGS.len() == 25,
    "add the new setting's index to ini_table! below"
);
static INI: IniEntryDefs<26> =
    ini_table!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24);

/// PHP's entry point into the extension.
#[no_mangle]
pub extern "C" fn get_module() -> *mut ModuleEntry {
    static MODULE: StaticModuleEntry = StaticModuleEntry::new();
    MODULE.get_or_init(|| {
        let built = ModuleBuilder::new("memcast", env!("CARGO_PKG_VERSION"))
            .startup_function(minit)
            .shutdown_function(mshutdown)
            .info_function(minfo)
            .try_into();
        let Ok((mut entry, _startup, owned)) = built else {
            unreachable!("the module entry has no functions or classes that could fail to build")
        };
        entry.deps = DEPS.0.as_ptr().cast();
        (entry, owned)
    })
}

static MODULE_NUMBER: AtomicUsize = AtomicUsize::new(0);

static PS_MODULE: PsModule = PsModule(ps_module {
    s_name: c"memcast".as_ptr(),
    s_open: Some(ps_open),
    s_close: Some(ps_close),
    s_read: Some(ps_read),
    s_write: Some(ps_write),
    s_destroy: Some(ps_destroy),
    s_gc: Some(ps_gc),
    s_create_sid: Some(ps_create_sid),
    s_validate_sid: Some(ps_validate_sid),
    s_update_timestamp: Some(ps_update_timestamp),
});
struct PsModule(ps_module);
// SAFETY: a constant table of a 'static name and function pointers.
unsafe impl Sync for PsModule {}

extern "C" fn minit(_type: i32, module_number: i32) -> i32 {
    MODULE_NUMBER.store(module_number as usize, Ordering::Relaxed);
    IniEntryDef::register(INI.as_slice(), module_number);
    // SAFETY: MINIT runs once, single-threaded, after the session module
    // started (declared dependency); PS_MODULE lives for the whole process.
    let registered = unsafe { php_session_register_module(&PS_MODULE.0) };
    if registered != SUCCESS {
        return FAILURE;
    }
    // SAFETY: as above; the function table is fully built at MINIT.
    unsafe { wrap_session_functions() };
    // SAFETY: MINIT, single-threaded; the session module registered its
    // INI entries before ours (declared dependency).
    unsafe { wrap_save_path_on_modify() };
    check_startup_save_path();
    SUCCESS
}

extern "C" fn mshutdown(_type: i32, _module_number: i32) -> i32 {
    // SAFETY: MSHUTDOWN runs once, single-threaded, before the function
    // table is destroyed.
    unsafe { unwrap_session_functions() };
    // SAFETY: as above; the session module's entries outlive ours.
    unsafe { unwrap_save_path_on_modify() };
    let _ = catch_unwind(|| {
        if let Some(mut store) = STORE.take() {
            store.shutdown();
        }
    });
    SUCCESS
}

extern "C" fn minfo(module: *mut ModuleEntry) {
    let counters = catch_unwind(|| STORE.inspect(|s| (s.counters(), s.origin_id())))
        .ok()
        .flatten();
    let row = |name: &str, value: &str| {
        let name = cstring(name);
        let value = cstring(value);
        // SAFETY: two NUL-terminated strings for a two-column row.
        unsafe { php_info_print_table_row(2, name.as_ptr(), value.as_ptr()) };
    };
    // SAFETY: phpinfo() is printing our section; the table calls pair up.
    unsafe {
        php_info_print_table_start();
        php_info_print_table_header(2, c"memcast support".as_ptr(), c"enabled".as_ptr());
    }
    row("Version", env!("CARGO_PKG_VERSION"));
    row("Save handler", "memcast");
    row(
        "PGM transport in libzmq",
        if memcast_bus::has_pgm() { "yes" } else { "no" },
    );
    if let Some((c, origin)) = counters {
        row("Origin id (this process)", &format!("{origin:016x}"));
        for (server, n) in &c.reads_by_server {
            row(&format!("Reads from {server}"), &n.to_string());
        }
        row("Failovers", &c.failovers.to_string());
        row(
            "Cold misses asked of the next server",
            &c.cold_misses.to_string(),
        );
        row(
            "Hits on a server not known complete checked on the next server",
            &c.checked_hits.to_string(),
        );
        row(
            "Of those, newer on the next server (read there)",
            &c.stale_hits.to_string(),
        );
        row("Read-repairs", &c.read_repairs.to_string());
        row(
            "Misses no other server could confirm",
            &c.unconfirmed_misses.to_string(),
        );
        row(
            "Writes that began from a miss and found a session (kept)",
            &c.conflicts.to_string(),
        );
        row(
            "Sessions read from memcast.migrate_from",
            &c.migrated_reads.to_string(),
        );
        row(
            "Sealed values not opened (read as misses)",
            &c.unopened.to_string(),
        );
        row("Writes", &c.writes.to_string());
        row("Write failures", &c.write_failures.to_string());
        row("Frames published", &c.published.to_string());
        row("Publish drops", &c.publish_drops.to_string());
        row("Dropped sessions sent again", &c.resent.to_string());
        row(
            "Dropped sessions not remembered (over 1024)",
            &c.unsent_forgotten.to_string(),
        );
        row("Lock waits", &c.lock_waits.to_string());
        row("Lock failures", &c.lock_failures.to_string());
        row("Lock wait total (ms)", &c.lock_wait_ms_total.to_string());
        row("Lock wait max (ms)", &c.lock_wait_ms_max.to_string());
        row(
            "Reads that caught up with the last write under a cluster-wide lock",
            &c.lock_catch_ups.to_string(),
        );
        row(
            "Of those, the write found nowhere in time (read from an older copy)",
            &c.lock_writes_not_found.to_string(),
        );
    }
    // SAFETY: closes the table opened above; `module` is the entry PHP passed.
    unsafe {
        php_info_print_table_end();
        display_ini_entries(module.cast());
    }
}

// ------------------------------------- wrapped session functions ---

// PHP 8.2's session_write_close() returns true even when the handler could
// not store the data. memcast makes it return false then, so the caller can
// tell. The write callback sets this flag; the wrapper reads it.
//
// session_start(['read_and_close' => true]) only reads: the read callback
// takes no lock then. The session_start() wrapper sets this flag for the call.
thread_local! {
    static WRITE_FAILED: Cell<bool> = const { Cell::new(false) };
    static READ_ONLY: Cell<bool> = const { Cell::new(false) };
}

type Handler = unsafe extern "C" fn(*mut zend_execute_data, *mut zval);
static ORIGINAL_WRITE_CLOSE: AtomicUsize = AtomicUsize::new(0);
static ORIGINAL_START: AtomicUsize = AtomicUsize::new(0);

/// The engine functions memcast wraps: names, where the engine's own
/// handler is kept, and the wrapper.
const WRAPPED: [(&[&CStr], &AtomicUsize, Handler); 2] = [
    (
        &[c"session_write_close", c"session_commit"],
        &ORIGINAL_WRITE_CLOSE,
        memcast_session_write_close,
    ),
    (&[c"session_start"], &ORIGINAL_START, memcast_session_start),
];

/// Calls the engine's own handler kept in `original`.
unsafe fn call_original(
    original: &AtomicUsize,
    execute_data: *mut zend_execute_data,
    return_value: *mut zval,
) {
    let original = original.load(Ordering::Relaxed);
    if original != 0 {
        // SAFETY: the value was read from the function table at MINIT and is
        // the engine's own handler with this exact signature.
        let original: Handler = unsafe { std::mem::transmute::<usize, Handler>(original) };
        // SAFETY: we forward the engine's own arguments unchanged.
        unsafe { original(execute_data, return_value) };
    }
}

unsafe extern "C" fn memcast_session_write_close(
    execute_data: *mut zend_execute_data,
    return_value: *mut zval,
) {
    WRITE_FAILED.with(|f| f.set(false));
    // SAFETY: the engine's own arguments, forwarded.
    unsafe { call_original(&ORIGINAL_WRITE_CLOSE, execute_data, return_value) };
    if WRITE_FAILED.with(|f| f.replace(false)) && !return_value.is_null() {
        // SAFETY: return_value is the engine's zval for this call; making it
        // `false` is a plain type change with no payload to release.
        unsafe {
            if (*return_value).u1.type_info == IS_TRUE {
                (*return_value).u1.type_info = IS_FALSE;
            }
        }
    }
}

unsafe extern "C" fn memcast_session_start(
    execute_data: *mut zend_execute_data,
    return_value: *mut zval,
) {
    // SAFETY: the engine's call frame of session_start(), read before the call.
    let read_only = unsafe { read_and_close_requested(execute_data) };
    READ_ONLY.with(|f| f.set(read_only));
    // SAFETY: the engine's own arguments, forwarded.
    unsafe { call_original(&ORIGINAL_START, execute_data, return_value) };
    READ_ONLY.with(|f| f.set(false));
}

/// Whether session_start() was called with ['read_and_close' => true].
// zend_is_true returns int up to PHP 8.2 and bool from 8.3: the cast below
// reads both (and is a no-op on 8.2).
#[allow(clippy::unnecessary_cast)]
unsafe fn read_and_close_requested(execute_data: *mut zend_execute_data) -> bool {
    if execute_data.is_null() {
        return false;
    }
    // SAFETY: a live call frame of an internal function: its arguments
    // follow the frame in zval slots (ZEND_CALL_ARG), and num_args says how
    // many there are; the options array is only read.
    unsafe {
        if (*execute_data).This.u2.num_args < 1 {
            return false;
        }
        let frame_slots =
            std::mem::size_of::<zend_execute_data>().div_ceil(std::mem::size_of::<zval>());
        let options = (execute_data as *mut zval).add(frame_slots);
        if u32::from((*options).u1.v.type_) != IS_ARRAY {
            return false;
        }
        let name = c"read_and_close";
        let value = zend_hash_str_find((*options).value.arr, name.as_ptr(), name.to_bytes().len());
        !value.is_null() && zend_is_true(value) as c_int != 0
    }
}

/// The engine's function entries for `names`.
unsafe fn functions(names: &[&CStr]) -> Vec<*mut zend_function> {
    let mut out = Vec::new();
    for name in names {
        // SAFETY: compiler_globals.function_table is the engine's global
        // function table, valid from MINIT to MSHUTDOWN; the lookup only reads.
        let f = unsafe {
            let table = compiler_globals.function_table;
            if table.is_null() {
                return out;
            }
            zend_hash_str_find_ptr_lc(table, name.as_ptr(), name.to_bytes().len())
                as *mut zend_function
        };
        if !f.is_null() {
            out.push(f);
        }
    }
    out
}

unsafe fn wrap_session_functions() {
    for (names, original, wrapper) in WRAPPED {
        // SAFETY: called at MINIT, single-threaded; the entries are internal
        // functions (type ZEND_INTERNAL_FUNCTION) owned by the session module.
        unsafe {
            for f in functions(names) {
                let handler = &mut (*f).internal_function.handler;
                if let Some(h) = *handler {
                    let _ = original.compare_exchange(
                        0,
                        h as usize,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    *handler = Some(wrapper);
                }
            }
        }
    }
}

unsafe fn unwrap_session_functions() {
    for (names, original, _) in WRAPPED {
        let original = original.load(Ordering::Relaxed);
        if original == 0 {
            continue;
        }
        // SAFETY: MSHUTDOWN, single-threaded; puts back the handler read at MINIT.
        unsafe {
            let original: Handler = std::mem::transmute::<usize, Handler>(original);
            for f in functions(names) {
                (*f).internal_function.handler = Some(original);
            }
        }
    }
}

// --------------------------------------------- settings checked when set ---
//
// PHP calls an INI entry's on_modify with every new value: php.ini and -d at
// start-up, ini_set(), php_value. Returning FAILURE keeps the value it had
// (at start-up: the default) and makes ini_set() return false; the warning
// says which value was refused and why, so a bad php.ini line shows at
// start-up instead of at every session_start().

const ZEND_INI_STAGE_STARTUP: c_int = 1;
const E_NOTICE_LEVEL: c_int = 8;
const INI_SUCCESS: c_int = 0;
const INI_FAILURE: c_int = -1;

type OnModify = unsafe extern "C" fn(
    *mut ext_php_rs::ffi::zend_ini_entry,
    *mut ext_php_rs::ffi::zend_string,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    c_int,
) -> c_int;

/// A PHP string's bytes as text.
unsafe fn zstr_text(s: *const ext_php_rs::ffi::zend_string) -> String {
    // SAFETY: the engine's zend_string and ext-php-rs's are the same C struct.
    String::from_utf8_lossy(unsafe { zstr_bytes(s.cast()) }).into_owned()
}

fn php_message(level: c_int, message: &str) {
    let message = cstring(&format!("memcast: {message}"));
    // SAFETY: a "%s" format with one NUL-terminated argument.
    unsafe { php_error_docref(ptr::null(), level, c"%s".as_ptr(), message.as_ptr()) };
}

unsafe extern "C" fn on_modify_memcast_setting(
    entry: *mut ext_php_rs::ffi::zend_ini_entry,
    new_value: *mut ext_php_rs::ffi::zend_string,
    _: *mut c_void,
    _: *mut c_void,
    _: *mut c_void,
    stage: c_int,
) -> c_int {
    if entry.is_null() {
        return INI_FAILURE;
    }
    // SAFETY: the engine passes its live entry and the new value (or null).
    let (name, value, current) = unsafe {
        (
            zstr_text((*entry).name),
            zstr_text(new_value),
            zstr_text((*entry).value),
        )
    };
    // The refusal, worded with what the setting keeps.
    let refusal = catch_unwind(|| {
        let name = cstring(&name);
        memcast_core::ini::check(&name, &value).err().map(|e| {
            let kept = if stage == ZEND_INI_STAGE_STARTUP {
                format!(
                    "the default {:?} is used",
                    memcast_core::ini::default_of(&name)
                )
            } else {
                format!("it stays {current:?}")
            };
            format!("{e}; {kept}")
        })
    });
    match refusal {
        Ok(None) => INI_SUCCESS,
        Ok(Some(e)) => {
            php_message(E_WARNING as c_int, &e);
            INI_FAILURE
        }
        Err(_) => INI_FAILURE,
    }
}

/// session.save_path belongs to the session module; memcast puts its own
/// check in front of the module's on_modify (kept here) while
/// session.save_handler is memcast: ini_set() and session_save_path() refuse
/// a save path memcast cannot use, and say why.
static ORIGINAL_SAVE_PATH_ON_MODIFY: AtomicUsize = AtomicUsize::new(0);

unsafe fn save_path_entry() -> *mut ext_php_rs::ffi::zend_ini_entry {
    let name = c"session.save_path";
    // SAFETY: EG(ini_directives) is the engine's table of INI entries, valid
    // from startup to shutdown; its values are zend_ini_entry pointers.
    unsafe {
        let table = ext_php_rs::ffi::executor_globals.ini_directives;
        if table.is_null() {
            return ptr::null_mut();
        }
        let zv = ext_php_rs::ffi::zend_hash_str_find(table, name.as_ptr(), name.to_bytes().len());
        if zv.is_null() {
            return ptr::null_mut();
        }
        (*zv).value.ptr.cast()
    }
}

unsafe fn wrap_save_path_on_modify() {
    // SAFETY: MINIT, single-threaded: nothing reads the entry concurrently.
    unsafe {
        let entry = save_path_entry();
        if entry.is_null() {
            return;
        }
        if let Some(original) = (*entry).on_modify {
            ORIGINAL_SAVE_PATH_ON_MODIFY.store(original as usize, Ordering::Relaxed);
        }
        (*entry).on_modify = Some(on_modify_save_path);
    }
}

unsafe fn unwrap_save_path_on_modify() {
    // SAFETY: MSHUTDOWN, single-threaded; puts back what MINIT found.
    unsafe {
        let entry = save_path_entry();
        if entry.is_null() {
            return;
        }
        let original = ORIGINAL_SAVE_PATH_ON_MODIFY.load(Ordering::Relaxed);
        (*entry).on_modify = if original == 0 {
            None
        } else {
            Some(std::mem::transmute::<usize, OnModify>(original))
        };
    }
}

/// Whether the sessions of this request go through memcast.
fn memcast_is_the_save_handler() -> bool {
    ini_string(c"session.save_handler").trim() == "memcast"
}

/// The save path checked as memcast reads it: an error, or the one notice
/// about parts written for other handlers that memcast ignores.
fn report_save_path(save_path: &str) -> Result<(), SessionError> {
    let parsed = memcast_core::ServerAddr::parse_save_path(save_path).map_err(|reason| {
        SessionError::SavePath {
            save_path: save_path.to_owned(),
            reason,
        }
    })?;
    if let Some(notice) = parsed.notice() {
        php_message(E_NOTICE_LEVEL, &notice);
    }
    Ok(())
}

unsafe extern "C" fn on_modify_save_path(
    entry: *mut ext_php_rs::ffi::zend_ini_entry,
    new_value: *mut ext_php_rs::ffi::zend_string,
    mh_arg1: *mut c_void,
    mh_arg2: *mut c_void,
    mh_arg3: *mut c_void,
    stage: c_int,
) -> c_int {
    // At start-up memcast is not running yet: MINIT checks the value then.
    if stage != ZEND_INI_STAGE_STARTUP {
        // SAFETY: the new value PHP passes, or null.
        let value = unsafe { zstr_text(new_value) };
        let verdict = catch_unwind(|| {
            if memcast_is_the_save_handler() {
                report_save_path(&value)
            } else {
                Ok(())
            }
        });
        match verdict {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                php_message(E_WARNING as c_int, &e.to_string());
                return INI_FAILURE;
            }
            Err(_) => return INI_FAILURE,
        }
    }
    let original = ORIGINAL_SAVE_PATH_ON_MODIFY.load(Ordering::Relaxed);
    if original == 0 {
        return INI_SUCCESS;
    }
    // SAFETY: the session module's own handler, read from this entry at
    // MINIT, called with the engine's own arguments.
    unsafe {
        let original = std::mem::transmute::<usize, OnModify>(original);
        original(entry, new_value, mh_arg1, mh_arg2, mh_arg3, stage)
    }
}

/// php.ini's session.save_path, checked once at start-up when memcast is
/// the handler: a mistake shows in the start-up log, not first at a request.
fn check_startup_save_path() {
    let _ = catch_unwind(|| {
        if memcast_is_the_save_handler() {
            if let Err(e) = report_save_path(&ini_string(c"session.save_path")) {
                php_message(E_WARNING as c_int, &e.to_string());
            }
        }
    });
}

// ------------------------------------------------------------ callbacks ---

/// The process's sessions (state lives as long as the PHP process).
static STORE: ProcessStore = ProcessStore::new();

/// A non-null `mod_data`: PHP calls write/close only when open set one.
static MOD_DATA: u8 = 0;

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

fn warn(message: &str) {
    let message = cstring(&format!("memcast: {message}"));
    // SAFETY: a "%s" format with one NUL-terminated argument.
    unsafe {
        php_error_docref(
            ptr::null(),
            E_WARNING as c_int,
            c"%s".as_ptr(),
            message.as_ptr(),
        )
    };
}

/// Why a callback did not do its work.
enum Failure {
    /// Said with one warning by the callback.
    Session(SessionError),
    /// Caught by [`guarded`], which warned already.
    Panicked,
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Failure {
        Failure::Session(e)
    }
}

/// Runs `f` (which uses [`STORE`]); a panic becomes one warning and
/// [`Failure::Panicked`], and the store starts afresh (its state may be
/// half-updated).
fn guarded<T>(callback: &str, f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            drop(STORE.take());
            warn(&format!(
                "internal error in the {callback} callback; the request's session was not changed"
            ));
            Err(Failure::Panicked)
        }
    }
}

/// A failed callback's warning (a panic was warned about already).
fn warn_failure(failure: Failure) {
    if let Failure::Session(e) = failure {
        warn(&e.to_string());
    }
}

fn ini_string(name: &CStr) -> String {
    let mut exists = false;
    // SAFETY: a NUL-terminated name of a registered setting; the engine
    // returns a pointer to its current value or null.
    let value = unsafe { zend_ini_string_ex(name.as_ptr(), name.to_bytes().len(), 0, &mut exists) };
    if value.is_null() {
        return String::new();
    }
    // SAFETY: INI values are NUL-terminated strings owned by the engine.
    unsafe { CStr::from_ptr(value) }
        .to_string_lossy()
        .into_owned()
}

/// The bytes of a PHP string.
unsafe fn zstr_bytes<'a>(s: *const zend_string) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    // SAFETY: a live zend_string holds `len` bytes at `val`.
    unsafe { std::slice::from_raw_parts((*s).val.as_ptr().cast::<u8>(), (*s).len) }
}

/// A new (request-allocated) PHP string.
fn new_zstr(bytes: &[u8]) -> *mut zend_string {
    ZendStr::new(bytes, false).into_raw().cast()
}

fn ttl(maxlifetime: zend_long) -> u64 {
    maxlifetime.max(0) as u64
}

unsafe extern "C" fn ps_open(
    mod_data: *mut *mut c_void,
    save_path: *const c_char,
    _name: *const c_char,
) -> zend_result {
    let save_path = if save_path.is_null() {
        String::new()
    } else {
        // SAFETY: PHP passes its NUL-terminated session.save_path.
        unsafe { CStr::from_ptr(save_path) }
            .to_string_lossy()
            .into_owned()
    };
    let config = match catch_unwind(|| ExtensionConfig::from_ini(ini_string)) {
        Ok(Ok(mut c)) => {
            if c.lock_expire == 0 {
                // A lock outlives its request by at most the request's time limit.
                let limit = ini_string(c"max_execution_time")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
                c.lock_expire = if limit > 0 { limit } else { 30 };
            }
            c
        }
        Ok(Err(e)) => {
            warn(&e);
            return FAILURE;
        }
        Err(_) => return FAILURE,
    };
    let opened = guarded("open", || Ok(STORE.with(|s| s.open(config, &save_path))?));
    match opened {
        Ok(notices) => {
            for n in notices {
                warn(&n);
            }
            // SAFETY: mod_data is PHP's PS(mod_data) slot.
            unsafe { *mod_data = ptr::from_ref(&MOD_DATA).cast_mut().cast() };
            SUCCESS
        }
        Err(failure) => {
            warn_failure(failure);
            FAILURE
        }
    }
}

unsafe extern "C" fn ps_close(mod_data: *mut *mut c_void) -> zend_result {
    let _ = guarded("close", || {
        STORE.with(|s| s.close());
        Ok(())
    });
    // SAFETY: PHP's PS(mod_data) slot.
    unsafe { *mod_data = ptr::null_mut() };
    SUCCESS
}

/// PHP's own rule for a session id (`php_session_valid_key`, applied by the
/// files handler to every id it reads): `A-Z a-z 0-9 , -`, 1 to 256 of them.
/// Checked on all the bytes, so an embedded NUL is refused too.
fn valid_session_id(id: &[u8]) -> bool {
    (1..=256).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b',' || b == b'-')
}

/// The files handler's warning for an id it refuses, word for word.
fn warn_invalid_id() {
    // SAFETY: a "%s" format with one NUL-terminated argument.
    unsafe {
        php_error_docref(
            ptr::null(),
            E_WARNING as c_int,
            c"%s".as_ptr(),
            c"Session ID is too long or contains illegal characters. Only the A-Z, a-z, 0-9, \"-\", and \",\" characters are allowed".as_ptr(),
        )
    };
}

unsafe extern "C" fn ps_read(
    _: *mut *mut c_void,
    key: *mut zend_string,
    val: *mut *mut zend_string,
    maxlifetime: zend_long,
) -> zend_result {
    // SAFETY: key is the session id PHP owns for this call.
    let id = unsafe { zstr_bytes(key) };
    if !valid_session_id(id) {
        // As the files handler: such an id (from a cookie, or session_id())
        // never reaches the store, and the session does not start.
        warn_invalid_id();
        return FAILURE;
    }
    let read_only = READ_ONLY.with(|f| f.get());
    let read = || {
        if !read_only {
            // Waits for the lock without holding the store.
            STORE.lock_session(id)?;
        }
        // Waits for the last write made under a cluster-wide lock without
        // holding the store either.
        let (data, warning) = STORE.read_session(id, ttl(maxlifetime));
        if let Some(w) = warning {
            warn(&w);
        }
        Ok(data?)
    };
    match guarded("read", read) {
        Ok(data) => {
            // SAFETY: PHP takes ownership of *val.
            unsafe { *val = new_zstr(data.as_deref().unwrap_or(&[])) };
            SUCCESS
        }
        Err(failure) => {
            warn_failure(failure);
            FAILURE
        }
    }
}

/// A write no server took: one warning, and session_write_close() returns
/// false. We answer SUCCESS to the session module so it does not add its
/// own, vaguer warning on top of ours.
fn failed_write(failure: Failure) -> zend_result {
    warn_failure(failure);
    WRITE_FAILED.with(|f| f.set(true));
    SUCCESS
}

/// [`SessionStore::write`] or [`SessionStore::touch`].
type StoreOp = fn(&mut SessionStore, &[u8], &[u8], u64) -> Result<(), SessionError>;

/// A write or a touch: store, publish, and report a failure the way
/// [`failed_write`] does.
fn store_session(
    callback: &str,
    id: &[u8],
    data: &[u8],
    maxlifetime: zend_long,
    op: StoreOp,
) -> zend_result {
    let result = guarded(callback, || {
        let (stored, publish_warning) =
            STORE.with(|s| (op(s, id, data, ttl(maxlifetime)), s.take_publish_error()));
        if let Some(w) = publish_warning {
            warn(&w);
        }
        Ok(stored?)
    });
    match result {
        Ok(()) => SUCCESS,
        Err(failure) => failed_write(failure),
    }
}

unsafe extern "C" fn ps_write(
    _: *mut *mut c_void,
    key: *mut zend_string,
    val: *mut zend_string,
    maxlifetime: zend_long,
) -> zend_result {
    // SAFETY: PHP owns both strings for the duration of the call.
    let (id, data) = unsafe { (zstr_bytes(key), zstr_bytes(val)) };
    if !valid_session_id(id) {
        return FAILURE; // as the files handler; read warned about this id
    }
    store_session("write", id, data, maxlifetime, SessionStore::write)
}

unsafe extern "C" fn ps_update_timestamp(
    _: *mut *mut c_void,
    key: *mut zend_string,
    val: *mut zend_string,
    maxlifetime: zend_long,
) -> zend_result {
    // SAFETY: PHP owns both strings for the duration of the call.
    let (id, data) = unsafe { (zstr_bytes(key), zstr_bytes(val)) };
    if !valid_session_id(id) {
        return FAILURE;
    }
    store_session(
        "update_timestamp",
        id,
        data,
        maxlifetime,
        SessionStore::touch,
    )
}

unsafe extern "C" fn ps_destroy(_: *mut *mut c_void, key: *mut zend_string) -> zend_result {
    // SAFETY: PHP owns the id for the duration of the call.
    let id = unsafe { zstr_bytes(key) };
    match guarded("destroy", || Ok(STORE.with(|s| s.destroy(id))?)) {
        Ok(()) => SUCCESS,
        Err(failure) => {
            warn_failure(failure);
            FAILURE
        }
    }
}

unsafe extern "C" fn ps_gc(
    _: *mut *mut c_void,
    _maxlifetime: zend_long,
    nrdels: *mut zend_long,
) -> zend_long {
    // Expiry is memcached's TTL (session.gc_maxlifetime): nothing to collect.
    if !nrdels.is_null() {
        // SAFETY: PHP's out-parameter.
        unsafe { *nrdels = 0 };
    }
    0
}

unsafe extern "C" fn ps_create_sid(mod_data: *mut *mut c_void) -> *mut zend_string {
    for _ in 0..3 {
        // SAFETY: PHP's own id generator (session.sid_length, bits per char).
        let id = unsafe { php_session_create_id(mod_data) };
        if id.is_null() {
            return id;
        }
        // SAFETY: a live string we own.
        let bytes = unsafe { zstr_bytes(id) };
        let taken = guarded("create_sid", || Ok(STORE.with(|s| s.id_taken(bytes))));
        if !taken.unwrap_or(false) {
            return id;
        }
        // SAFETY: the colliding id is ours to release.
        unsafe { ext_php_rs::ffi::ext_php_rs_zend_string_release(id.cast()) };
    }
    warn("could not create a session id that is not already in use after 3 attempts");
    ptr::null_mut()
}

unsafe extern "C" fn ps_validate_sid(_: *mut *mut c_void, key: *mut zend_string) -> zend_result {
    // SAFETY: PHP owns the id for the duration of the call.
    let id = unsafe { zstr_bytes(key) };
    if !valid_session_id(id) {
        return FAILURE; // strict mode then makes a new id, as with files
    }
    match guarded("validate_sid", || Ok(STORE.with(|s| s.exists(id))?)) {
        Ok(true) => SUCCESS,
        Ok(false) | Err(Failure::Panicked) => FAILURE,
        Err(Failure::Session(e)) => {
            warn(&format!("cannot validate session id: {e}"));
            FAILURE
        }
    }
}
