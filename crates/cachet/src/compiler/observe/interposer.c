/*
 * cachet-observe.so: an LD_PRELOAD library that records what a compile touches.
 *
 * cachet loads it into every process of a compiler's process tree (gcc driver, cc1, as,
 * collect2, ld, clang, rustc and its proc-macro dylibs, rustup proxies) so the cache can
 * key on everything the compile read: the files it read, the files it looked for and did
 * not find, the files it wrote, the environment variables it read, and the programs it ran.
 *
 * Why C: this code runs inside every compiler process. A preloaded library must not bring
 * a language runtime (allocator, panic machinery, TLS destructors, its own libc
 * dependencies) into programs that did not ask for one, and parts of it run between vfork
 * and exec, where only a few async-signal-safe system calls are allowed.
 *
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -o cachet-observe.so interposer.c -ldl
 *
 * Activation: only when CACHET_OBSERVE_LOG holds an absolute path when the library loads
 * (read from `environ`, never through the getenv we interpose). Otherwise every wrapper
 * just calls the real function. Nothing is ever printed to stdout or stderr.
 *
 * LOG FORMAT (the specification for the Rust reader)
 *
 * Text, one record per line, each line written with a single write(2) to a file opened
 * with O_APPEND, so lines of concurrent processes never interleave. A record is a tag, one
 * space, and a payload. Paths are absolute (a relative path is joined to getcwd(), or for
 * *at calls to the directory of the dirfd as /proc/self/fd/N names it), not normalised
 * (".." and symlinks are kept), and escaped: backslash -> "\\", newline -> "\n" (two
 * characters); nothing else is escaped. A path that cannot be made absolute is not recorded.
 * Paths under /proc/, /sys/ and /dev/ are never recorded, except in X records.
 *
 *   P <pid> <ppid>       this process loaded the library (written when it initialises).
 *   X <pid> <prog>       process <pid> is about to exec <prog> (execve, execv, execvp,
 *                        execvpe, execl, execlp, execle, fexecve; written by the calling
 *                        process just before the real call). <prog> is an absolute path, or
 *                        the bare name given to execvp/execvpe/execlp/posix_spawnp when it has
 *                        no slash. For posix_spawn/posix_spawnp it is written by the parent
 *                        after a successful spawn, with the child's pid. An X whose pid never
 *                        writes a P means the new program did not load the library (static,
 *                        setuid, or LD_PRELOAD dropped from its environment).
 *   x <pid>              the last X of <pid> failed (the exec call returned): ignore it.
 *   R <path>             a non-directory file was opened for reading (open family without
 *                        O_WRONLY/O_RDWR/O_CREAT/O_TRUNC; fopen family with a mode starting
 *                        with 'r' and without '+'), and the open succeeded.
 *   W <path>             a file was opened for writing or created (open with any of those
 *                        flags, creat, fopen modes w/a/+), whether or not that succeeded; also
 *                        the new name of rename/renameat/renameat2 and the path given to
 *                        unlink/unlinkat (success or not).
 *   K <path>             a directory was created (successful mkdir/mkdirat).
 *   M <path>             a lookup failed with ENOENT or ENOTDIR (open and fopen families for
 *                        reading, stat family, statx, access family, readlink/readlinkat).
 *   S <path>             a stat-family call, statx or readlink succeeded on a path that is not
 *                        a directory, an access-family call succeeded (no directory check),
 *                        or an open with O_PATH succeeded on a non-directory.
 *   E <name>=<value>     getenv/secure_getenv returned <value> (escaped like a path).
 *   e <name>             getenv/secure_getenv returned NULL.
 *
 * Not recorded: access/faccessat calls whose mode includes X_OK (that is a driver searching
 * PATH for programs, which cachet handles another way); env names starting with
 * CACHET_OBSERVE or LD_PRELOAD; fstat-like calls with AT_EMPTY_PATH and an empty path.
 * Calls that glibc makes internally (fopen -> open, realpath -> readlink/lstat, opendir,
 * mkstemp, execl -> execve, posix_spawn's exec, the dynamic loader's own opens of shared
 * libraries, and glibc's own getenv calls for locale/malloc settings) do not go through
 * the PLT, so they are never seen here: only the calls a program makes itself.
 */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
/* Fortify and 64-bit off_t redirect open, stat & co. in the headers; we want plain names. */
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

extern char **environ;

#define BUF_SIZE (PATH_MAX * 2 + 64)
#define LOG_FD_MIN 900

/* Recursion guard: set while we do our own bookkeeping, so nothing we call records.
   initial-exec: we are preloaded, so our TLS is static and reading it never allocates. */
static __thread int in_hook __attribute__((tls_model("initial-exec")));

enum { ST_UNINIT, ST_BUSY, ST_OFF, ST_ON };
static int state = ST_UNINIT;
static int log_fd = -1;
static dev_t log_dev;
static ino_t log_ino;
static char log_name[PATH_MAX];

/* ---------------------------------------------------------------- real functions */

#define MISSING ((void *)-1)

/* Look up the next definition of `name` once; racy but idempotent. */
static void *resolve(void **slot, const char *name)
{
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (p == NULL) {
        int g = in_hook;
        in_hook = 1;
        p = dlsym(RTLD_NEXT, name);
        if (p == NULL) {
            dlerror(); /* never leave our failure for the program's next dlerror() */
            /* glibc >= 2.33 may keep __xstat & co. only as compat symbols (no default
               version), which plain dlsym does not return: ask for the x86_64 base version. */
            p = dlvsym(RTLD_NEXT, name, "GLIBC_2.2.5");
            if (p == NULL) {
                dlerror();
                p = MISSING;
            }
        }
        in_hook = g;
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p == MISSING ? NULL : p;
}

/* Inside wrapper my_NAME: the real NAME with the same type, or NULL. */
#define REAL(name) ((__typeof(&my_##name))resolve(&slot_##name, #name))
#define NOREAL(ret)         \
    do {                    \
        errno = ENOSYS;     \
        return ret;         \
    } while (0)
/* Export static my_NAME under exactly the symbol NAME, whatever the headers declare. */
#define EXPORT(name)                                                        \
    extern __typeof(my_##name) exported_##name __asm__(#name)               \
        __attribute__((alias("my_" #name), visibility("default")));

/* ---------------------------------------------------------------- the log file */

static int open_log(void)
{
    int fd = syscall(SYS_openat, AT_FDCWD, log_name, O_WRONLY | O_APPEND | O_CLOEXEC | O_CREAT, 0600);
    if (fd < 0)
        return -1;
    /* Move out of the way of programs that expect low fds to be free. */
    int hi = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, LOG_FD_MIN);
    if (hi >= 0) {
        syscall(SYS_close, fd);
        fd = hi;
    }
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) != 0) {
        syscall(SYS_close, fd);
        return -1;
    }
    log_dev = st.st_dev;
    log_ino = st.st_ino;
    return fd;
}

static void write_log(const char *buf, size_t len)
{
    int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
    struct stat st;
    /* The program may have closed our fd and reused the number (closefrom, dup2, or a
       vfork child publishing its own fd): never write into a file that is not the log. */
    if (fd < 0 || syscall(SYS_fstat, fd, &st) != 0 || st.st_dev != log_dev || st.st_ino != log_ino) {
        int nfd = open_log();
        if (nfd < 0)
            return;
        if (__atomic_compare_exchange_n(&log_fd, &fd, nfd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            fd = nfd;
        } else { /* another thread reopened first: use its fd (now in fd) */
            syscall(SYS_close, nfd);
        }
    }
    while (syscall(SYS_write, fd, buf, len) < 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------- building records */
/* Records are built in a caller's buffer; `at` is the length so far, 0 meaning "failed". */

static size_t put(char *b, size_t at, size_t cap, const char *s, size_t n)
{
    if (at == 0 || n > cap - at)
        return 0;
    memcpy(b + at, s, n);
    return at + n;
}

static size_t put_num(char *b, size_t at, size_t cap, unsigned long v)
{
    char t[24];
    size_t i = sizeof t;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(b, at, cap, t + i, sizeof t - i);
}

/* Append the target of /proc/self/fd/<fd>, if it is an absolute path. */
static size_t put_fd_path(char *b, size_t at, size_t cap, int fd)
{
    char proc[40] = "/proc/self/fd/";
    size_t n = put_num(proc, 14, sizeof proc - 1, (unsigned long)fd);
    if (at == 0 || fd < 0 || n == 0)
        return 0;
    proc[n] = 0;
    long r = syscall(SYS_readlinkat, AT_FDCWD, proc, b + at, cap - at);
    /* Not a path for pipes, sockets, anon inodes ("pipe:[123]"). */
    if (r <= 0 || (size_t)r >= cap - at || b[at] != '/')
        return 0;
    return at + (size_t)r;
}

/* Append `path` made absolute against the cwd (AT_FDCWD) or dirfd. */
static size_t put_abs(char *b, size_t at, size_t cap, int dirfd, const char *path)
{
    if (at == 0 || path == NULL || path[0] == 0)
        return 0;
    if (path[0] != '/') {
        if (dirfd == AT_FDCWD) {
            /* The raw syscall returns the length including the NUL, and may return
               "(unreachable)/..." when the cwd is outside our root. */
            long r = syscall(SYS_getcwd, b + at, cap - at);
            if (r <= 1 || b[at] != '/')
                return 0;
            at += (size_t)r - 1;
        } else {
            at = put_fd_path(b, at, cap, dirfd);
            if (at == 0)
                return 0;
        }
        if (b[at - 1] != '/')
            at = put(b, at, cap, "/", 1);
    }
    return put(b, at, cap, path, strlen(path));
}

static int is_pseudo(const char *p, size_t n)
{
    static const char *const roots[] = {"/proc", "/sys", "/dev"};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        size_t k = strlen(roots[i]);
        if (n >= k && memcmp(p, roots[i], k) == 0 && (n == k || p[k] == '/'))
            return 1;
    }
    return 0;
}

/* Escape b[from, at) in place (backslash -> \\, newline -> \n), end the line, write it. */
static void finish(char *b, size_t from, size_t at, size_t cap)
{
    if (at == 0)
        return;
    size_t extra = 0;
    for (size_t i = from; i < at; i++)
        extra += (b[i] == '\\' || b[i] == '\n');
    if (at + extra + 1 > cap)
        return; /* too long: skip rather than write a truncated record */
    for (size_t i = at, j = at + extra; extra && i > from;) {
        char c = b[--i];
        if (c == '\n' || c == '\\') {
            b[--j] = c == '\n' ? 'n' : '\\';
            b[--j] = '\\';
        } else {
            b[--j] = c;
        }
    }
    b[at + extra] = '\n';
    write_log(b, at + extra + 1);
}

static void log_path(char tag, int dirfd, const char *path)
{
    char b[BUF_SIZE];
    b[0] = tag;
    b[1] = ' ';
    size_t at = put_abs(b, 2, sizeof b, dirfd, path);
    if (at == 0 || is_pseudo(b + 2, at - 2))
        return;
    finish(b, 2, at, sizeof b);
}

/* X <pid> <prog>. search: prog goes through a PATH search (the p variants), so a name
   without a slash is kept bare; otherwise prog is made absolute (execve("cc1") runs ./cc1).
   For fexecve, fd >= 0 names the program. */
static void log_exec(pid_t pid, const char *prog, int search, int fd)
{
    char b[BUF_SIZE];
    b[0] = 'X';
    size_t at = put(b, 1, sizeof b, " ", 1);
    at = put_num(b, at, sizeof b, (unsigned long)pid);
    at = put(b, at, sizeof b, " ", 1);
    size_t start = at, end = 0;
    if (fd >= 0)
        end = put_fd_path(b, at, sizeof b, fd);
    else if (prog != NULL && (!search || strchr(prog, '/') != NULL))
        end = put_abs(b, at, sizeof b, AT_FDCWD, prog);
    if (end == 0 && prog != NULL) /* a bare name, or a path we cannot make absolute */
        end = put(b, at, sizeof b, prog, strlen(prog));
    if (end == 0 && fd >= 0) {
        end = put(b, at, sizeof b, "/proc/self/fd/", 14);
        end = put_num(b, end, sizeof b, (unsigned long)fd);
    }
    finish(b, start, end, sizeof b);
}

static void log_exec_failed(void)
{
    char b[32];
    b[0] = 'x';
    size_t at = put(b, 1, sizeof b, " ", 1);
    finish(b, 2, put_num(b, at, sizeof b, (unsigned long)getpid()), sizeof b);
}

static void log_env(const char *name, const char *val)
{
    if (name == NULL || strncmp(name, "CACHET_OBSERVE", 14) == 0 || strncmp(name, "LD_PRELOAD", 10) == 0)
        return;
    size_t nn = strlen(name), vn = val ? strlen(val) : 0;
    size_t need = 2 + 2 * (nn + 1 + vn) + 1; /* worst case: every byte escaped */
    char sb[BUF_SIZE], *b = sb;
    size_t cap = sizeof sb;
    if (need > cap) { /* long values (PATH, flags): mmap, never malloc (may be a vfork child) */
        b = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED)
            return;
        cap = need;
    }
    b[0] = val ? 'E' : 'e';
    b[1] = ' ';
    size_t at = put(b, 2, cap, name, nn);
    if (val) {
        at = put(b, at, cap, "=", 1);
        at = put(b, at, cap, val, vn);
    }
    finish(b, 2, at, cap);
    if (b != sb)
        munmap(b, cap);
}

/* ---------------------------------------------------------------- activation */

static void *slot_execve, *slot_execv, *slot_execvp, *slot_execvpe, *slot_fexecve;

static void init(void)
{
    int expected = ST_UNINIT;
    if (!__atomic_compare_exchange_n(&state, &expected, ST_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return; /* done, or being done by another thread (which then records alone) */
    int saved_errno = errno, g = in_hook;
    in_hook = 1;
    /* Resolve the exec family now, so a vfork child never runs dlsym. */
    resolve(&slot_execve, "execve");
    resolve(&slot_execv, "execv");
    resolve(&slot_execvp, "execvp");
    resolve(&slot_execvpe, "execvpe");
    resolve(&slot_fexecve, "fexecve");
    const char *v = NULL;
    for (char **ep = environ; ep != NULL && *ep != NULL; ep++) {
        if (strncmp(*ep, "CACHET_OBSERVE_LOG=", 19) == 0) {
            v = *ep + 19;
            break;
        }
    }
    int on = 0;
    if (v != NULL && v[0] == '/' && strlen(v) < sizeof log_name) {
        memcpy(log_name, v, strlen(v) + 1);
        int fd = open_log();
        if (fd >= 0) {
            __atomic_store_n(&log_fd, fd, __ATOMIC_RELEASE);
            on = 1;
        }
    }
    if (on) {
        char b[64];
        b[0] = 'P';
        size_t at = put(b, 1, sizeof b, " ", 1);
        at = put_num(b, at, sizeof b, (unsigned long)getpid());
        at = put(b, at, sizeof b, " ", 1);
        finish(b, 2, put_num(b, at, sizeof b, (unsigned long)getppid()), sizeof b);
    }
    __atomic_store_n(&state, on ? ST_ON : ST_OFF, __ATOMIC_RELEASE);
    in_hook = g;
    errno = saved_errno;
}

/* Runs before main, but other libraries' constructors may call our wrappers even earlier:
   those initialise lazily through is_on(). */
__attribute__((constructor)) static void observe_init(void)
{
    init();
}

static int is_on(void)
{
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (s == ST_UNINIT) {
        init();
        s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    }
    return s == ST_ON;
}

/* Run `body` (our bookkeeping) under the recursion guard, with errno kept exactly as the
   real call left it; `err` is that errno. */
#define OBSERVE(body)                       \
    do {                                    \
        int err = errno;                    \
        (void)err;                          \
        if (!in_hook && is_on()) {          \
            in_hook = 1;                    \
            body;                           \
            in_hook = 0;                    \
        }                                   \
        errno = err;                        \
    } while (0)

/* ---------------------------------------------------------------- classification */

#define WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)

static void note_read_fd(int dirfd, const char *path, int fd, char tag)
{
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) == 0 && S_ISDIR(st.st_mode))
        return;
    log_path(tag, dirfd, path);
}

static void note_open(int dirfd, const char *path, int flags, int fd, int err)
{
    if (flags & WRITE_FLAGS)
        log_path('W', dirfd, path);
    else if (fd >= 0) /* O_PATH gives no access to the contents: only existence */
        note_read_fd(dirfd, path, fd, (flags & O_PATH) ? 'S' : 'R');
    /* O_DIRECTORY on a regular file fails with ENOTDIR, but the path exists. */
    else if (err == ENOENT || (err == ENOTDIR && !(flags & O_DIRECTORY)))
        log_path('M', dirfd, path);
}

static void note_fopen(const char *path, const char *mode, FILE *f, int err)
{
    if (path == NULL || mode == NULL)
        return;
    if (mode[0] != 'r' || strchr(mode, '+') != NULL)
        log_path('W', AT_FDCWD, path);
    else if (f != NULL)
        note_read_fd(AT_FDCWD, path, fileno(f), 'R');
    else if (err == ENOENT || err == ENOTDIR)
        log_path('M', AT_FDCWD, path);
}

/* ok: the call succeeded; isdir: it told us the path is a directory. */
static void note_stat(int dirfd, const char *path, int ok, int err, int isdir)
{
    if (ok) {
        if (!isdir)
            log_path('S', dirfd, path);
    } else if (err == ENOENT || err == ENOTDIR) {
        log_path('M', dirfd, path);
    }
}

/* ---------------------------------------------------------------- open family */

/* open's mode argument exists only when O_CREAT or O_TMPFILE is set (glibc's
   __OPEN_NEEDS_MODE; O_TMPFILE includes O_DIRECTORY, hence the equality). */
#define NEEDS_MODE(f) (((f) & O_CREAT) != 0 || ((f) & O_TMPFILE) == O_TMPFILE)

#define OPEN_WRAPPER(name)                                      \
    static void *slot_##name;                                   \
    static int my_##name(const char *path, int flags, ...)      \
    {                                                           \
        mode_t mode = 0;                                        \
        if (NEEDS_MODE(flags)) {                                \
            va_list ap;                                         \
            va_start(ap, flags);                                \
            mode = va_arg(ap, mode_t);                          \
            va_end(ap);                                         \
        }                                                       \
        __typeof(&my_##name) real = REAL(name);                 \
        if (!real)                                              \
            NOREAL(-1);                                         \
        int fd = real(path, flags, mode);                       \
        OBSERVE(note_open(AT_FDCWD, path, flags, fd, err));     \
        return fd;                                              \
    }                                                           \
    EXPORT(name)

#define OPENAT_WRAPPER(name)                                            \
    static void *slot_##name;                                           \
    static int my_##name(int dirfd, const char *path, int flags, ...)   \
    {                                                                   \
        mode_t mode = 0;                                                \
        if (NEEDS_MODE(flags)) {                                        \
            va_list ap;                                                 \
            va_start(ap, flags);                                        \
            mode = va_arg(ap, mode_t);                                  \
            va_end(ap);                                                 \
        }                                                               \
        __typeof(&my_##name) real = REAL(name);                         \
        if (!real)                                                      \
            NOREAL(-1);                                                 \
        int fd = real(dirfd, path, flags, mode);                        \
        OBSERVE(note_open(dirfd, path, flags, fd, err));                \
        return fd;                                                      \
    }                                                                   \
    EXPORT(name)

/* __open_2 & co. are what _FORTIFY_SOURCE turns open() without a mode into. */
#define OPEN2_WRAPPER(name)                                     \
    static void *slot_##name;                                   \
    static int my_##name(const char *path, int flags)           \
    {                                                           \
        __typeof(&my_##name) real = REAL(name);                 \
        if (!real)                                              \
            NOREAL(-1);                                         \
        int fd = real(path, flags);                             \
        OBSERVE(note_open(AT_FDCWD, path, flags, fd, err));     \
        return fd;                                              \
    }                                                           \
    EXPORT(name)

#define OPENAT2_WRAPPER(name)                                   \
    static void *slot_##name;                                   \
    static int my_##name(int dirfd, const char *path, int flags) \
    {                                                           \
        __typeof(&my_##name) real = REAL(name);                 \
        if (!real)                                              \
            NOREAL(-1);                                         \
        int fd = real(dirfd, path, flags);                      \
        OBSERVE(note_open(dirfd, path, flags, fd, err));        \
        return fd;                                              \
    }                                                           \
    EXPORT(name)

#define CREAT_WRAPPER(name)                                     \
    static void *slot_##name;                                   \
    static int my_##name(const char *path, mode_t mode)         \
    {                                                           \
        __typeof(&my_##name) real = REAL(name);                 \
        if (!real)                                              \
            NOREAL(-1);                                         \
        int fd = real(path, mode);                              \
        OBSERVE(log_path('W', AT_FDCWD, path));                 \
        return fd;                                              \
    }                                                           \
    EXPORT(name)

#define FOPEN_WRAPPER(name)                                     \
    static void *slot_##name;                                   \
    static FILE *my_##name(const char *path, const char *mode)  \
    {                                                           \
        __typeof(&my_##name) real = REAL(name);                 \
        if (!real)                                              \
            NOREAL(NULL);                                       \
        FILE *f = real(path, mode);                             \
        OBSERVE(note_fopen(path, mode, f, err));                \
        return f;                                               \
    }                                                           \
    EXPORT(name)

/* freopen with a NULL path only changes the mode of the stream's current file. */
#define FREOPEN_WRAPPER(name)                                               \
    static void *slot_##name;                                               \
    static FILE *my_##name(const char *path, const char *mode, FILE *stream) \
    {                                                                       \
        __typeof(&my_##name) real = REAL(name);                             \
        if (!real)                                                          \
            NOREAL(NULL);                                                   \
        FILE *f = real(path, mode, stream);                                 \
        OBSERVE(note_fopen(path, mode, f, err));                            \
        return f;                                                           \
    }                                                                       \
    EXPORT(name)

OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)
OPEN2_WRAPPER(__open_2)
OPEN2_WRAPPER(__open64_2)
OPENAT2_WRAPPER(__openat_2)
OPENAT2_WRAPPER(__openat64_2)
CREAT_WRAPPER(creat)
CREAT_WRAPPER(creat64)
FOPEN_WRAPPER(fopen)
FOPEN_WRAPPER(fopen64)
FREOPEN_WRAPPER(freopen)
FREOPEN_WRAPPER(freopen64)

/* ---------------------------------------------------------------- stat family */

#define STAT_WRAPPER(name, st_t)                                            \
    static void *slot_##name;                                               \
    static int my_##name(const char *path, st_t *buf)                       \
    {                                                                       \
        __typeof(&my_##name) real = REAL(name);                             \
        if (!real)                                                          \
            NOREAL(-1);                                                     \
        int r = real(path, buf);                                            \
        OBSERVE(note_stat(AT_FDCWD, path, r == 0, err, r == 0 && S_ISDIR(buf->st_mode))); \
        return r;                                                           \
    }                                                                       \
    EXPORT(name)

#define FSTATAT_WRAPPER(name, st_t)                                                 \
    static void *slot_##name;                                                       \
    static int my_##name(int dirfd, const char *path, st_t *buf, int flags)         \
    {                                                                               \
        __typeof(&my_##name) real = REAL(name);                                     \
        if (!real)                                                                  \
            NOREAL(-1);                                                             \
        int r = real(dirfd, path, buf, flags);                                      \
        OBSERVE(note_stat(dirfd, path, r == 0, err, r == 0 && S_ISDIR(buf->st_mode))); \
        return r;                                                                   \
    }                                                                               \
    EXPORT(name)

/* Before glibc 2.33, stat() & co. were inline functions calling these with a version
   number, so programs built against older glibc call them directly. */
#define XSTAT_WRAPPER(name, st_t)                                           \
    static void *slot_##name;                                               \
    static int my_##name(int ver, const char *path, st_t *buf)              \
    {                                                                       \
        __typeof(&my_##name) real = REAL(name);                             \
        if (!real)                                                          \
            NOREAL(-1);                                                     \
        int r = real(ver, path, buf);                                       \
        OBSERVE(note_stat(AT_FDCWD, path, r == 0, err, r == 0 && S_ISDIR(buf->st_mode))); \
        return r;                                                           \
    }                                                                       \
    EXPORT(name)

#define FXSTATAT_WRAPPER(name, st_t)                                                    \
    static void *slot_##name;                                                           \
    static int my_##name(int ver, int dirfd, const char *path, st_t *buf, int flags)    \
    {                                                                                   \
        __typeof(&my_##name) real = REAL(name);                                         \
        if (!real)                                                                      \
            NOREAL(-1);                                                                 \
        int r = real(ver, dirfd, path, buf, flags);                                     \
        OBSERVE(note_stat(dirfd, path, r == 0, err, r == 0 && S_ISDIR(buf->st_mode)));  \
        return r;                                                                       \
    }                                                                                   \
    EXPORT(name)

/* An empty path (with AT_EMPTY_PATH) is an fstat of dirfd: put_abs never records "". */
STAT_WRAPPER(stat, struct stat)
STAT_WRAPPER(stat64, struct stat64)
STAT_WRAPPER(lstat, struct stat)
STAT_WRAPPER(lstat64, struct stat64)
FSTATAT_WRAPPER(fstatat, struct stat)
FSTATAT_WRAPPER(fstatat64, struct stat64)
XSTAT_WRAPPER(__xstat, struct stat)
XSTAT_WRAPPER(__xstat64, struct stat64)
XSTAT_WRAPPER(__lxstat, struct stat)
XSTAT_WRAPPER(__lxstat64, struct stat64)
FXSTATAT_WRAPPER(__fxstatat, struct stat)
FXSTATAT_WRAPPER(__fxstatat64, struct stat64)

/* statx is declared from glibc 2.28 on; before that only the kernel ABI is known
   (stx_mode is the u16 at offset 28 of struct statx). */
#ifdef STATX_TYPE
#define STX_MODE(buf) ((buf)->stx_mode)
#else
struct statx;
#define STX_MODE(buf) (*(const unsigned short *)((const char *)(buf) + 28))
#endif
static void *slot_statx;
static int my_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
{
    __typeof(&my_statx) real = REAL(statx);
    if (!real)
        NOREAL(-1);
    int r = real(dirfd, path, flags, mask, buf);
    OBSERVE(note_stat(dirfd, path, r == 0, err, r == 0 && S_ISDIR(STX_MODE(buf))));
    return r;
}
EXPORT(statx)

/* ---------------------------------------------------------------- access, readlink */

#define ACCESS_WRAPPER(name)                                        \
    static void *slot_##name;                                       \
    static int my_##name(const char *path, int mode)                \
    {                                                               \
        __typeof(&my_##name) real = REAL(name);                     \
        if (!real)                                                  \
            NOREAL(-1);                                             \
        int r = real(path, mode);                                   \
        if (!(mode & X_OK))                                         \
            OBSERVE(note_stat(AT_FDCWD, path, r == 0, err, 0));     \
        return r;                                                   \
    }                                                               \
    EXPORT(name)

ACCESS_WRAPPER(access)
ACCESS_WRAPPER(eaccess)
ACCESS_WRAPPER(euidaccess)

static void *slot_faccessat;
static int my_faccessat(int dirfd, const char *path, int mode, int flags)
{
    __typeof(&my_faccessat) real = REAL(faccessat);
    if (!real)
        NOREAL(-1);
    int r = real(dirfd, path, mode, flags);
    if (!(mode & X_OK))
        OBSERVE(note_stat(dirfd, path, r == 0, err, 0));
    return r;
}
EXPORT(faccessat)

/* A successful readlink means a symlink (not a directory): S. */
static void *slot_readlink;
static ssize_t my_readlink(const char *path, char *buf, size_t size)
{
    __typeof(&my_readlink) real = REAL(readlink);
    if (!real)
        NOREAL(-1);
    ssize_t r = real(path, buf, size);
    OBSERVE(note_stat(AT_FDCWD, path, r >= 0, err, 0));
    return r;
}
EXPORT(readlink)

static void *slot_readlinkat;
static ssize_t my_readlinkat(int dirfd, const char *path, char *buf, size_t size)
{
    __typeof(&my_readlinkat) real = REAL(readlinkat);
    if (!real)
        NOREAL(-1);
    ssize_t r = real(dirfd, path, buf, size);
    OBSERVE(note_stat(dirfd, path, r >= 0, err, 0));
    return r;
}
EXPORT(readlinkat)

/* ---------------------------------------------------------------- environment */

#define GETENV_WRAPPER(name)                            \
    static void *slot_##name;                           \
    static char *my_##name(const char *var)             \
    {                                                   \
        __typeof(&my_##name) real = REAL(name);         \
        if (!real)                                      \
            NOREAL(NULL);                               \
        char *v = real(var);                            \
        OBSERVE(log_env(var, v));                       \
        return v;                                       \
    }                                                   \
    EXPORT(name)

GETENV_WRAPPER(getenv)
GETENV_WRAPPER(secure_getenv)

/* ---------------------------------------------------------------- exec family */
/* These may run in a vfork child: stack buffers and system calls only. */

static int my_execve(const char *path, char *const argv[], char *const envp[])
{
    __typeof(&my_execve) real = REAL(execve);
    if (!real)
        NOREAL(-1);
    OBSERVE(log_exec(getpid(), path, 0, -1));
    int r = real(path, argv, envp);
    OBSERVE(log_exec_failed());
    return r;
}
EXPORT(execve)

static int my_execv(const char *path, char *const argv[])
{
    __typeof(&my_execv) real = REAL(execv);
    if (!real)
        NOREAL(-1);
    OBSERVE(log_exec(getpid(), path, 0, -1));
    int r = real(path, argv);
    OBSERVE(log_exec_failed());
    return r;
}
EXPORT(execv)

/* The PATH search happens inside glibc: X names the program as given. */
static int my_execvp(const char *file, char *const argv[])
{
    __typeof(&my_execvp) real = REAL(execvp);
    if (!real)
        NOREAL(-1);
    OBSERVE(log_exec(getpid(), file, 1, -1));
    int r = real(file, argv);
    OBSERVE(log_exec_failed());
    return r;
}
EXPORT(execvp)

static int my_execvpe(const char *file, char *const argv[], char *const envp[])
{
    __typeof(&my_execvpe) real = REAL(execvpe);
    if (!real)
        NOREAL(-1);
    OBSERVE(log_exec(getpid(), file, 1, -1));
    int r = real(file, argv, envp);
    OBSERVE(log_exec_failed());
    return r;
}
EXPORT(execvpe)

static int my_fexecve(int fd, char *const argv[], char *const envp[])
{
    __typeof(&my_fexecve) real = REAL(fexecve);
    if (!real)
        NOREAL(-1);
    OBSERVE(log_exec(getpid(), NULL, 0, fd));
    int r = real(fd, argv, envp);
    OBSERVE(log_exec_failed());
    return r;
}
EXPORT(fexecve)

/* execl*: gather the variadic arguments (up to and including the terminating NULL) into a
   stack array (no malloc: may be a vfork child) and go through the vector forms. */
#define COLLECT_ARGS(arg0, argv)                                \
    va_list ap;                                                 \
    size_t argc = 0;                                            \
    if (arg0 != NULL) {                                         \
        va_start(ap, arg0);                                     \
        for (argc = 1; va_arg(ap, const char *) != NULL; argc++) \
            ;                                                   \
        va_end(ap);                                             \
    }                                                           \
    char *argv[argc + 1];                                       \
    argv[0] = (char *)arg0;                                     \
    va_start(ap, arg0);                                         \
    for (size_t i = 1; i <= argc; i++)                          \
        argv[i] = va_arg(ap, char *);

static int my_execl(const char *path, const char *arg0, ...)
{
    COLLECT_ARGS(arg0, argv)
    va_end(ap);
    return my_execv(path, argv);
}
EXPORT(execl)

static int my_execlp(const char *file, const char *arg0, ...)
{
    COLLECT_ARGS(arg0, argv)
    va_end(ap);
    return my_execvp(file, argv);
}
EXPORT(execlp)

static int my_execle(const char *path, const char *arg0, ...)
{
    COLLECT_ARGS(arg0, argv)
    char *const *envp = va_arg(ap, char *const *); /* follows the NULL */
    va_end(ap);
    return my_execve(path, argv, envp);
}
EXPORT(execle)

/* glibc's posix_spawn execs in a CLONE_VFORK child with internal calls we never see, and
   reports a failed exec as its return value: on success the child runs `path`. */
#define SPAWN_WRAPPER(name, search)                                                         \
    static void *slot_##name;                                                               \
    static int my_##name(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa, \
                         const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) \
    {                                                                                       \
        __typeof(&my_##name) real = REAL(name);                                             \
        if (!real)                                                                          \
            return ENOSYS;                                                                  \
        pid_t local;                                                                        \
        pid_t *pp = pid != NULL ? pid : &local;                                             \
        int r = real(pp, path, fa, attr, argv, envp);                                       \
        if (r == 0)                                                                         \
            OBSERVE(log_exec(*pp, path, search, -1));                                       \
        return r;                                                                           \
    }                                                                                       \
    EXPORT(name)

SPAWN_WRAPPER(posix_spawn, 0)
SPAWN_WRAPPER(posix_spawnp, 1)

/* ---------------------------------------------------------------- directories, renames */

static void *slot_mkdir;
static int my_mkdir(const char *path, mode_t mode)
{
    __typeof(&my_mkdir) real = REAL(mkdir);
    if (!real)
        NOREAL(-1);
    int r = real(path, mode);
    if (r == 0)
        OBSERVE(log_path('K', AT_FDCWD, path));
    return r;
}
EXPORT(mkdir)

static void *slot_mkdirat;
static int my_mkdirat(int dirfd, const char *path, mode_t mode)
{
    __typeof(&my_mkdirat) real = REAL(mkdirat);
    if (!real)
        NOREAL(-1);
    int r = real(dirfd, path, mode);
    if (r == 0)
        OBSERVE(log_path('K', dirfd, path));
    return r;
}
EXPORT(mkdirat)

static void *slot_rename;
static int my_rename(const char *from, const char *to)
{
    __typeof(&my_rename) real = REAL(rename);
    if (!real)
        NOREAL(-1);
    int r = real(from, to);
    OBSERVE(log_path('W', AT_FDCWD, to));
    return r;
}
EXPORT(rename)

static void *slot_renameat;
static int my_renameat(int fromfd, const char *from, int tofd, const char *to)
{
    __typeof(&my_renameat) real = REAL(renameat);
    if (!real)
        NOREAL(-1);
    int r = real(fromfd, from, tofd, to);
    OBSERVE(log_path('W', tofd, to));
    return r;
}
EXPORT(renameat)

static void *slot_renameat2;
static int my_renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned int flags)
{
    __typeof(&my_renameat2) real = REAL(renameat2);
    if (!real)
        NOREAL(-1);
    int r = real(fromfd, from, tofd, to, flags);
    OBSERVE(log_path('W', tofd, to));
    return r;
}
EXPORT(renameat2)

static void *slot_unlink;
static int my_unlink(const char *path)
{
    __typeof(&my_unlink) real = REAL(unlink);
    if (!real)
        NOREAL(-1);
    int r = real(path);
    OBSERVE(log_path('W', AT_FDCWD, path));
    return r;
}
EXPORT(unlink)

static void *slot_unlinkat;
static int my_unlinkat(int dirfd, const char *path, int flags)
{
    __typeof(&my_unlinkat) real = REAL(unlinkat);
    if (!real)
        NOREAL(-1);
    int r = real(dirfd, path, flags);
    OBSERVE(log_path('W', dirfd, path));
    return r;
}
EXPORT(unlinkat)
