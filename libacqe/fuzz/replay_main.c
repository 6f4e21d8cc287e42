/* A main() for the fuzz harness without libFuzzer: runs every file named on the command line (or every
 * file in the directories named) through LLVMFuzzerTestOneInput once. Used by tests/run_sanitized.sh to
 * replay the saved corpus under ASan + UBSan with any compiler, and by AFL++ builds. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    if (n > 0 && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        free(buf);
        return -1;
    }
    fclose(fp);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    int i, count = 0;
    for (i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: cannot stat %s\n", argv[i]);
            return 2;
        }
        if (S_ISDIR(st.st_mode)) {
            DIR *d = opendir(argv[i]);
            struct dirent *de;
            char path[4096];
            while (d && (de = readdir(d)) != NULL) {
                if (de->d_name[0] == '.') continue;
                snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
                if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && run_file(path) == 0) count++;
            }
            if (d) closedir(d);
        } else if (run_file(argv[i]) == 0) {
            count++;
        }
    }
    printf("replay: %d inputs, no crash\n", count);
    return 0;
}
