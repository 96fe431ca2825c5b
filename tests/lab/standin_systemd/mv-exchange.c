/* mv for an initrd whose coreutils lacks --exchange (< 9.5): "mv --exchange --no-target-directory
   -- A B" is one renameat2(RENAME_EXCHANGE); any other call runs coreutils' mv. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define REAL_MV "/usr/libexec/ivm/mv.coreutils"

int main(int argc, char **argv) {
    const char *paths[2];
    int n = 0, exchange = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--exchange") == 0)
            exchange = 1;
        else if (strncmp(argv[i], "--", 2) != 0 && n < 2)
            paths[n++] = argv[i];
    }
    if (!exchange) {
        argv[0] = "mv";
        execv(REAL_MV, argv);
        perror(REAL_MV);
        return 127;
    }
    if (n != 2 || renameat2(AT_FDCWD, paths[0], AT_FDCWD, paths[1], RENAME_EXCHANGE) != 0) {
        perror("mv --exchange");
        return 1;
    }
    return 0;
}
