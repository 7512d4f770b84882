/* Samples how many rustc threads are running (state R in /proc/PID/task/TID/stat) every
 * few milliseconds until stdin closes, then prints: samples peak mean share_above_J.
 * Usage: concurrency-sampler J INTERVAL_MS < (a pipe closed when the build ends) */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return (int)n;
}

static int running_rustc_threads(void) {
    int count = 0;
    DIR *proc = opendir("/proc");
    if (!proc) return 0;
    struct dirent *p;
    char path[600], buf[512];
    while ((p = readdir(proc))) {
        if (p->d_name[0] < '0' || p->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/comm", p->d_name);
        if (read_small(path, buf, sizeof buf) < 0 || strcmp(buf, "rustc\n") != 0) continue;
        snprintf(path, sizeof path, "/proc/%s/task", p->d_name);
        DIR *tasks = opendir(path);
        if (!tasks) continue;
        struct dirent *t;
        while ((t = readdir(tasks))) {
            if (t->d_name[0] < '0' || t->d_name[0] > '9') continue;
            snprintf(path, sizeof path, "/proc/%s/task/%s/stat", p->d_name, t->d_name);
            if (read_small(path, buf, sizeof buf) < 0) continue;
            char *close_paren = strrchr(buf, ')');
            if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'R') count++;
        }
        closedir(tasks);
    }
    closedir(proc);
    return count;
}

int main(int argc, char **argv) {
    int j = argc > 1 ? atoi(argv[1]) : 1;
    int interval = argc > 2 ? atoi(argv[2]) : 5;
    long samples = 0, above = 0, sum = 0, busy = 0;
    int peak = 0;
    struct pollfd stop = {.fd = 0, .events = POLLIN};
    for (;;) {
        int n = running_rustc_threads();
        if (n > 0) {
            /* Only samples while some compiler runs count towards the mean. */
            busy++;
            sum += n;
            if (n > j) above++;
        }
        if (n > peak) peak = n;
        samples++;
        if (poll(&stop, 1, interval) > 0) break;
    }
    printf("%ld %d %.2f %.3f\n", busy, peak, busy ? (double)sum / busy : 0.0,
           busy ? (double)above / busy : 0.0);
    return 0;
}
