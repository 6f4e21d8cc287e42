/* List the tensors of an .acqe file and decode one of them to float16. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "acqe.h"

int main(int argc, char **argv) {
    acqe_file *f;
    acqe_error err;
    const char *want = argc > 2 ? argv[2] : NULL;
    size_t i, n;
    if (argc < 2 || acqe_open_path(argv[1], NULL, &f, &err)) {
        fprintf(stderr, "%s\n", argc < 2 ? "usage: list_and_decode FILE [TENSOR]" : err.message);
        return argc < 2 ? 1 : 3;
    }
    n = acqe_tensor_count(f);
    for (i = 0; i < n; i++) {
        const acqe_tensor_info *t = acqe_tensor(f, i);
        printf("%-60s %-16s %-8s %llu values\n", t->name, acqe_codec_name(t->codec),
               acqe_dtype_name(t->decoded_dtype), (unsigned long long)t->numel);
    }
    if (want) {
        int64_t k = acqe_find_tensor(f, want, strlen(want));
        uint64_t bytes;
        uint16_t *half;                       /* IEEE binary16 bit patterns, native byte order */
        if (k < 0 || acqe_output_size(acqe_tensor(f, (size_t)k), ACQE_DTYPE_F16, &bytes, &err)) {
            fprintf(stderr, "%s\n", k < 0 ? "no such tensor" : err.message);
            return 1;
        }
        half = malloc(bytes ? bytes : 1);
        if (acqe_decode(f, (size_t)k, ACQE_DTYPE_F16, half, bytes, 2, &err)) {
            fprintf(stderr, "%s: %s\n", acqe_status_name(err.status), err.message);
            return acqe_status_is_file_error(err.status) ? 3 : 1;
        }
        printf("%s: first value 0x%04x (float16 bits)\n", want, bytes ? half[0] : 0);
        free(half);
    }
    acqe_close(f);
    return 0;
}
