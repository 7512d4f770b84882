//! What the proxy tests share.

use std::path::Path;

use cachet_jobserver::{Jobserver, Proxy};

/// `bash -c SCRIPT bash FILE` with the proxy's pipe open in it as MAKEFLAGS names it (its
/// CLOEXEC cleared between fork and exec); `{r}` in the script is the read fd's number.
pub fn bash_on_proxy(proxy: &Proxy, script: &str, file: &Path) -> tokio::process::Command {
    let [r, w] = proxy.fds();
    let mut cmd = tokio::process::Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(script.replace("{r}", &r.to_string()))
        .arg("bash")
        .arg(file)
        .envs(proxy.child_env(None));
    // SAFETY: fcntl only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [r, w] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    cmd
}

/// Asserts that every token of the build's and the server's pool is back.
pub fn assert_no_token_lost(build: &Jobserver, server: &Jobserver) {
    assert_eq!(
        build.stats().pool_in_use,
        0,
        "the build's pool lost a token"
    );
    assert_eq!(
        server.stats().pool_in_use,
        0,
        "the server's pool lost a token"
    );
}
