/*
 * lister: walks the directory given as argv[1] depth first, in the order
 * readdir returns entries, and prints one line per entry:
 *
 *   <path> type=<d|f|o> size=<st_size> ino=<st_ino> dev=<st_dev>
 *     nlink=<st_nlink> atime=<s.ns> mtime=<s.ns> ctime=<s.ns> [fnv=<hex>]
 *
 * (one line each; fnv is a 64-bit FNV-1a hash of a file's bytes), then the
 * same for the directory itself as "<dir>/.". Everything the host could
 * leak about its files (times, inode and device numbers, link counts,
 * directory sizes, entry order) shows in the output. Exits 1 on any error.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t fnv(const char *path)
{
    uint64_t hash = 0xcbf29ce484222325ull;
    FILE *f = fopen(path, "rb");
    int c;
    if (f == NULL)
        return 0;
    while ((c = fgetc(f)) != EOF) {
        hash ^= (uint64_t)(unsigned char)c;
        hash *= 0x100000001b3ull;
    }
    fclose(f);
    return hash;
}

static int show(const char *path)
{
    struct stat st;
    char type;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "lister: cannot stat %s: %s\n", path, strerror(errno));
        return 0;
    }
    type = S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : 'o';
    printf("%s type=%c size=%lld ino=%llu dev=%llu nlink=%llu atime=%lld.%09ld "
           "mtime=%lld.%09ld ctime=%lld.%09ld",
           path, type, (long long)st.st_size, (unsigned long long)st.st_ino,
           (unsigned long long)st.st_dev, (unsigned long long)st.st_nlink,
           (long long)st.st_atim.tv_sec, (long)st.st_atim.tv_nsec,
           (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec,
           (long long)st.st_ctim.tv_sec, (long)st.st_ctim.tv_nsec);
    if (type == 'f')
        printf(" fnv=%016llx", (unsigned long long)fnv(path));
    printf("\n");
    return 1;
}

static int walk(const char *dir)
{
    char path[4096];
    struct dirent *entry;
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "lister: cannot open %s: %s\n", dir, strerror(errno));
        return 0;
    }
    while ((entry = readdir(d)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        printf("entry %s d_ino=%llu\n", path, (unsigned long long)entry->d_ino);
        if (!show(path)) {
            closedir(d);
            return 0;
        }
        if (entry->d_type == DT_DIR && !walk(path)) {
            closedir(d);
            return 0;
        }
    }
    closedir(d);
    snprintf(path, sizeof path, "%s/.", dir);
    return show(path);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: lister DIR\n");
        return 2;
    }
    return walk(argv[1]) ? 0 : 1;
}
