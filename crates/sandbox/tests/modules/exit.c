/*
 * exit: prints "exiting <n>" to stdout and "bye" to stderr, then exit(n).
 *
 *   usage: exit N      (N parsed with atoi)
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int code;
    if (argc < 2) {
        fprintf(stderr, "usage: exit N\n");
        return 2;
    }
    code = atoi(argv[1]);
    printf("exiting %d\n", code);
    fprintf(stderr, "bye\n");
    exit(code);
}
