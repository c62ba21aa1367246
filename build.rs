//! Generates the bindings to PHP's session module (`ps_module`,
//! `php_session_register_module`, ...) and the few engine functions the
//! extension's FFI shell needs beyond ext-php-rs, from the headers of the PHP
//! that `php-config` names. bindgen also emits layout tests for every struct,
//! so `ps_module` cannot silently drift from `php_session.h`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PHP_CONFIG");
    let php_config = env::var("PHP_CONFIG").unwrap_or_else(|_| "php-config".into());
    let includes = Command::new(&php_config)
        .arg("--includes")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {php_config} --includes ({e}); install php8.2-dev"));
    assert!(includes.status.success(), "{php_config} --includes failed");
    let includes = String::from_utf8(includes.stdout).expect("php-config output is not UTF-8");
    refuse_thread_safe_php(&php_config, &includes);

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let wrapper = out.join("memcast_php.h");
    std::fs::write(
        &wrapper,
        "#include \"php.h\"\n\
         #include \"ext/session/php_session.h\"\n\
         #include \"ext/standard/info.h\"\n\
         #include \"zend_ini.h\"\n",
    )
    .expect("write wrapper header");

    let bindings = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .clang_args(includes.split_whitespace())
        .allowlist_type("ps_module_struct")
        .allowlist_type("zend_module_dep")
        .allowlist_type("zend_function")
        .allowlist_function("php_session_register_module")
        .allowlist_function("php_session_create_id")
        .allowlist_function("zend_ini_string_ex")
        .allowlist_function("zend_ini_long")
        .allowlist_function("display_ini_entries")
        .allowlist_function("php_error_docref")
        .allowlist_function("php_info_print_table_start")
        .allowlist_function("php_info_print_table_end")
        .allowlist_function("php_info_print_table_header")
        .allowlist_function("php_info_print_table_row")
        .allowlist_function("zend_hash_str_find_ptr_lc")
        .allowlist_function("zend_hash_str_find")
        .allowlist_function("zend_is_true")
        .allowlist_var("IS_ARRAY")
        .allowlist_var("compiler_globals")
        .allowlist_var("E_WARNING")
        .allowlist_var("MODULE_DEP_REQUIRED")
        .allowlist_var("IS_TRUE")
        .allowlist_var("IS_FALSE")
        .derive_default(false)
        .layout_tests(true)
        .generate()
        .expect("bindgen could not generate the PHP session bindings");
    bindings
        .write_to_file(out.join("php_bindings.rs"))
        .expect("write bindings");
}

/// memcast supports only non-thread-safe (NTS) PHP: its FFI reads the
/// engine's globals directly (no TSRM) and one process-wide store serves
/// every request, so in a thread-safe PHP one thread's lock wait would block
/// the others. A thread-safe PHP is refused here with one message instead of
/// failing later in bindgen or rustc; PHP itself refuses an NTS build loaded
/// into a ZTS PHP ("build ID ... These options need to match").
fn refuse_thread_safe_php(php_config: &str, includes: &str) {
    let zts = includes
        .split_whitespace()
        .filter_map(|flag| flag.strip_prefix("-I"))
        .map(|dir| PathBuf::from(dir).join("main/php_config.h"))
        .find_map(|header| std::fs::read_to_string(header).ok())
        .is_some_and(|config| config.lines().any(|line| line.trim() == "#define ZTS 1"));
    assert!(
        !zts,
        "memcast does not support thread-safe (ZTS) PHP builds: the PHP that {php_config} \
         names is ZTS (e.g. FrankenPHP). Build against an NTS PHP (php-fpm, mod_php prefork, CLI)."
    );
}
