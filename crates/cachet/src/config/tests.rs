use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with(move |name| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| OsString::from(v))
    })
}

#[test]
fn defaults_follow_xdg_and_home() {
    let config = load(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/nonexistent")]).unwrap();
    assert_eq!(config.cache_dir, PathBuf::from("/home/u/.cache/cachet"));
    assert_eq!(config.cache_size, DEFAULT_CACHE_SIZE);
    assert_eq!(config.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        config.runtime_dir,
        PathBuf::from("/home/u/.cache/cachet/run")
    );
    assert!(config.jobs() >= 1);
    assert_eq!(config.jobs_setting, None);
    assert_eq!(config.origins["jobs"], Origin::Default);
}

#[test]
fn file_then_env_override() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "cache_dir = \"/srv/cache\"\ncache_size = \"2G\"\njobs = 3\nidle_timeout = \"5m\"\n",
    )
    .unwrap();
    let file_str = file.to_str().unwrap();
    let config = load(&[
        ("HOME", "/h"),
        ("CACHET_CONFIG", file_str),
        ("CACHET_JOBS", "7"),
    ])
    .unwrap();
    assert_eq!(config.cache_dir, PathBuf::from("/srv/cache"));
    assert_eq!(config.cache_size, 2 << 30);
    assert_eq!(config.jobs(), 7);
    assert_eq!(config.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.origins["jobs"], Origin::Env("CACHET_JOBS"));
    assert_eq!(config.origins["cache_size"], Origin::File(file.clone()));
    assert_eq!(config.file.as_deref(), Some(file.as_path()));
}

#[test]
fn bad_values_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "jobs = \"many\"\n").unwrap();
    let err = load(&[("HOME", "/h"), ("CACHET_CONFIG", file.to_str().unwrap())]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`jobs`") && text.contains(file.to_str().unwrap()),
        "{text}"
    );

    std::fs::write(&file, "jobz = 3\n").unwrap();
    let text = load(&[("HOME", "/h"), ("CACHET_CONFIG", file.to_str().unwrap())])
        .unwrap_err()
        .to_string();
    assert!(text.contains("unknown key `jobz`"), "{text}");

    std::fs::write(&file, "jobs = [\n").unwrap();
    let text = load(&[("HOME", "/h"), ("CACHET_CONFIG", file.to_str().unwrap())])
        .unwrap_err()
        .to_string();
    assert!(text.contains("not valid TOML"), "{text}");

    let text = load(&[
        ("HOME", "/h"),
        ("XDG_CONFIG_HOME", "/nonexistent"),
        ("CACHET_CACHE_SIZE", "lots"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("`cache_size`") && text.contains("CACHET_CACHE_SIZE"),
        "{text}"
    );

    let text = load(&[
        ("HOME", "/h"),
        ("XDG_CONFIG_HOME", "/nonexistent"),
        ("CACHET_JOBS", "0"),
    ])
    .unwrap_err()
    .to_string();
    assert!(text.contains("`jobs`"), "{text}");
}

#[test]
fn base_dirs_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "base_dirs = [\"/home/ci/work/\", \"/root//.cargo\"]\n",
    )
    .unwrap();
    let file_str = file.to_str().unwrap();
    let config = load(&[("HOME", "/h"), ("CACHET_CONFIG", file_str)]).unwrap();
    assert_eq!(
        config.base_dirs,
        vec![
            PathBuf::from("/home/ci/work"),
            PathBuf::from("/root/.cargo")
        ]
    );
    assert_eq!(config.origins["base_dirs"], Origin::File(file.clone()));

    let config = load(&[
        ("HOME", "/h"),
        ("CACHET_CONFIG", file_str),
        ("CACHET_BASE_DIRS", "/a/./b:/c/"),
    ])
    .unwrap();
    assert_eq!(
        config.base_dirs,
        vec![PathBuf::from("/a/b"), PathBuf::from("/c")]
    );
    assert_eq!(config.origins["base_dirs"], Origin::Env("CACHET_BASE_DIRS"));

    // Set but empty: no base dirs, even though the file lists some.
    let config = load(&[
        ("HOME", "/h"),
        ("CACHET_CONFIG", file_str),
        ("CACHET_BASE_DIRS", ""),
    ])
    .unwrap();
    assert!(config.base_dirs.is_empty());

    std::fs::write(&file, "base_dirs = []\n").unwrap();
    let config = load(&[("HOME", "/h"), ("CACHET_CONFIG", file_str)]).unwrap();
    assert!(config.base_dirs.is_empty());

    let default = load(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "/nonexistent")]).unwrap();
    assert!(default.base_dirs.is_empty());
    assert_eq!(default.origins["base_dirs"], Origin::Default);
}

#[test]
fn bad_base_dirs_are_explained() {
    let env_err = |value: &str| {
        load(&[
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/nonexistent"),
            ("CACHET_BASE_DIRS", value),
        ])
        .unwrap_err()
        .to_string()
    };
    for (value, says) in [
        ("relative/dir", "not an absolute path"),
        ("/a/../b", "contains `..`"),
        ("/", "cannot be a base dir"),
        ("/a/b:/a", "overlap"),
        ("/a:/a/", "overlap"),
    ] {
        let text = env_err(value);
        assert!(
            text.contains("`base_dirs`")
                && text.contains("CACHET_BASE_DIRS")
                && text.contains(says),
            "{value}: {text}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    for (toml, says) in [
        ("base_dirs = \"/a\"\n", "expected an array"),
        ("base_dirs = [1]\n", "expected path strings"),
        ("base_dirs = [\"a\"]\n", "not an absolute path"),
    ] {
        std::fs::write(&file, toml).unwrap();
        let text = load(&[("HOME", "/h"), ("CACHET_CONFIG", file.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("`base_dirs`")
                && text.contains(file.to_str().unwrap())
                && text.contains(says),
            "{toml}: {text}"
        );
    }
}

#[test]
fn a_missing_named_config_file_is_an_error() {
    let err = load(&[
        ("HOME", "/h"),
        ("CACHET_CONFIG", "/nonexistent/cachet.toml"),
    ])
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("10G"), Some(10 << 30));
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_size("1.5K"), Some(1536));
    assert_eq!(parse_size("123"), Some(123));
    assert_eq!(parse_size("12Q"), None);
    assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("soon"), None);
}
