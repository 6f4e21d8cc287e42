/* Memory-mapping a file read-only (POSIX). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

acqe_status acqe__map_path(const char *path, const uint8_t **data, size_t *size, void **map, size_t *map_size,
                           acqe_error *err);
void acqe__unmap(void *map, size_t map_size);

acqe_status acqe__map_path(const char *path, const uint8_t **data, size_t *size, void **map, size_t *map_size,
                           acqe_error *err) {
    struct stat stt;
    int fd = open(path, O_RDONLY);
    void *m;
    if (fd < 0) return acqe__fail(err, ACQE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &stt) != 0) {
        int e = errno;
        close(fd);
        return acqe__fail(err, ACQE_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(stt.st_mode)) {
        close(fd);
        return acqe__fail(err, ACQE_ERR_IO, "%s is not a regular file", path);
    }
    if ((uint64_t)stt.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return acqe__fail(err, ACQE_ERR_IO, "%s is too large to map on this system", path);
    }
    *size = (size_t)stt.st_size;
    *map = NULL;
    *map_size = 0;
    if (*size == 0) {
        close(fd);
        *data = NULL;
        return ACQE_OK;
    }
    m = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return acqe__fail(err, ACQE_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    *map = m;
    *map_size = *size;
    *data = (const uint8_t *)m;
    return ACQE_OK;
}

void acqe__unmap(void *map, size_t map_size) { munmap(map, map_size); }
