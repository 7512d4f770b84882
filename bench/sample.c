/* A realistic translation unit for overhead measurements: system headers (about 175 KB
 * preprocessed) and some real code. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

struct entry {
    char *key;
    double value;
    struct entry *next;
};

struct table {
    struct entry **buckets;
    size_t nbuckets;
    size_t count;
    pthread_mutex_t lock;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

static struct table *table_new(size_t nbuckets) {
    struct table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->buckets = calloc(nbuckets, sizeof *t->buckets);
    t->nbuckets = nbuckets;
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

static int table_put(struct table *t, const char *key, double value) {
    pthread_mutex_lock(&t->lock);
    size_t i = hash_str(key) % t->nbuckets;
    for (struct entry *e = t->buckets[i]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            e->value = value;
            pthread_mutex_unlock(&t->lock);
            return 0;
        }
    }
    struct entry *e = malloc(sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&t->lock);
        return -ENOMEM;
    }
    e->key = strdup(key);
    e->value = value;
    e->next = t->buckets[i];
    t->buckets[i] = e;
    t->count++;
    pthread_mutex_unlock(&t->lock);
    return 1;
}

static double table_get(struct table *t, const char *key, double fallback) {
    pthread_mutex_lock(&t->lock);
    size_t i = hash_str(key) % t->nbuckets;
    for (struct entry *e = t->buckets[i]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            double v = e->value;
            pthread_mutex_unlock(&t->lock);
            return v;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return fallback;
}

static void table_free(struct table *t) {
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct entry *e = t->buckets[i];
        while (e) {
            struct entry *next = e->next;
            free(e->key);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&t->lock);
    free(t->buckets);
    free(t);
}

static double stddev(const double *xs, size_t n) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++)
        mean += xs[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++)
        var += (xs[i] - mean) * (xs[i] - mean);
    return sqrt(var / (double)n);
}

static char *normalize(const char *in) {
    size_t len = strlen(in);
    char *out = malloc(len + 1);
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        if (isalnum((unsigned char)in[i]))
            out[j++] = (char)tolower((unsigned char)in[i]);
        else if (j > 0 && out[j - 1] != '_')
            out[j++] = '_';
    }
    out[j] = 0;
    return out;
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) { stop = sig; }

int run_report(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    signal(SIGINT, on_signal);
    struct table *t = table_new(1024);
    double samples[64];
    for (size_t i = 0; i < 64; i++) {
        char name[32];
        snprintf(name, sizeof name, "Sample %zu!", i);
        char *key = normalize(name);
        samples[i] = sin((double)i) * (double)st.st_size;
        table_put(t, key, samples[i]);
        free(key);
    }
    printf("%zu entries, sd %.3f, pid %ld, at %ld, first %.3f\n", t->count, stddev(samples, 64),
           (long)getpid(), (long)time(NULL), table_get(t, "sample_0_", -1.0));
    table_free(t);
    return stop ? 130 : 0;
}
