/*
 * writer: writes two files into the directory given as argv[1]:
 *
 *   <dir>/a.txt       "alpha\n"
 *   <dir>/sub/b.bin   256 bytes 0x00..0xff   (creates <dir>/sub with mkdir)
 *
 * then prints "wrote 2 files" to stdout. Any failure is reported on stderr
 * and exits 1; a missing argument exits 2.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "writer: cannot create %s: %s\n", path, strerror(errno));
        return 0;
    }
    if (fwrite(data, 1, len, f) != len) {
        fprintf(stderr, "writer: cannot write %s: %s\n", path, strerror(errno));
        fclose(f);
        return 0;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "writer: cannot close %s: %s\n", path, strerror(errno));
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    char dir[4096], path[4200];
    unsigned char bin[256];
    size_t len;
    int i;

    if (argc != 2 || argv[1][0] == '\0') {
        fprintf(stderr, "usage: writer OUTPUT_DIR\n");
        return 2;
    }
    len = strlen(argv[1]);
    if (len >= sizeof dir) {
        fprintf(stderr, "writer: path too long\n");
        return 2;
    }
    memcpy(dir, argv[1], len + 1);
    while (len > 1 && dir[len - 1] == '/') /* "out/" -> "out", keep "/" */
        dir[--len] = '\0';
    if (len == 1 && dir[0] == '/')
        dir[0] = '\0'; /* so that "/" + "/a.txt" does not become "//a.txt" */

    snprintf(path, sizeof path, "%s/a.txt", dir);
    if (!write_file(path, "alpha\n", 6))
        return 1;

    snprintf(path, sizeof path, "%s/sub", dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "writer: cannot mkdir %s: %s\n", path, strerror(errno));
        return 1;
    }

    for (i = 0; i < 256; i++)
        bin[i] = (unsigned char)i;
    snprintf(path, sizeof path, "%s/sub/b.bin", dir);
    if (!write_file(path, bin, sizeof bin))
        return 1;

    printf("wrote 2 files\n");
    return 0;
}
