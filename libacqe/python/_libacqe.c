/* _libacqe: a thin CPython wrapper over libacqe (to be built as acqe_format._libacqe; see
 * build_ext_snippet.py). Decoding and verifying release the GIL.
 *
 *   import _libacqe, numpy as np
 *   f = _libacqe.File("model.acqe")           # a path, or any buffer (bytes, mmap, numpy...): not copied
 *   for i, (name, shape, stored, decoded, codec, *_ ) in enumerate(f.tensors()):
 *       out = np.empty(shape, dtype=np.float16)
 *       f.decode_into(i, out, "float16", 2)   # (index, writable C-contiguous buffer, dtype or None, threads)
 *   f.verify(2)                               # dict: tensors, decoded_bytes, payload_bytes, max_expansion, ...
 *   f.close()
 *
 * Errors raise _libacqe.LibAcqeError(category, message): .category is the spec's category name
 * ("LayoutError", ..., as in spec/vectors/invalid/MANIFEST.json) or "DecodeLimitError", "ArgumentError",
 * "IOError", "OutOfMemory"; .message the one-line message. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "../acqe.h"

static PyObject *LibAcqeError;

typedef struct {
    PyObject_HEAD
    acqe_file *f;
    Py_buffer view;   /* the caller's buffer (open from data), held until close */
    int has_view;
    int busy;         /* decodes/verifies running without the GIL */
} FileObject;

static PyObject *raise_error(const acqe_error *e) {
    PyObject *exc = PyObject_CallFunction(LibAcqeError, "ss", acqe_status_name(e->status), e->message);
    if (exc) {
        PyObject_SetAttrString(exc, "category", PyTuple_GET_ITEM(((PyBaseExceptionObject *)exc)->args, 0));
        PyObject_SetAttrString(exc, "message", PyTuple_GET_ITEM(((PyBaseExceptionObject *)exc)->args, 1));
        PyErr_SetObject(LibAcqeError, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static int check_open(FileObject *self) {
    if (!self->f) {
        PyErr_SetString(PyExc_ValueError, "the file is closed");
        return -1;
    }
    return 0;
}

static int parse_dtype(PyObject *o, acqe_dtype *out) {
    int d;
    if (o == NULL || o == Py_None) {
        *out = ACQE_DTYPE_NONE;
        return 0;
    }
    if (!PyUnicode_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "dtype must be None or a name such as 'float16'");
        return -1;
    }
    for (d = 1; d <= 13; d++) {
        if (PyUnicode_CompareWithASCIIString(o, acqe_dtype_name((acqe_dtype)d)) == 0) {
            *out = (acqe_dtype)d;
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "unknown dtype %R", o);
    return -1;
}

static void release(FileObject *self) {
    if (self->f) {
        acqe_close(self->f);
        self->f = NULL;
    }
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
    }
}

static void File_dealloc(FileObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    release(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp); /* a heap type */
}

static int File_init(FileObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"source", "max_decoded_bytes", NULL};
    PyObject *source;
    unsigned long long maxb = 0;
    acqe_options opts;
    acqe_error err;
    acqe_status st;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|K", kwlist, &source, &maxb)) return -1;
    release(self);
    acqe_options_init(&opts);
    opts.max_decoded_bytes = maxb;
    if (PyUnicode_Check(source) || PyObject_HasAttrString(source, "__fspath__")) {
        PyObject *bytes = NULL;
        if (!PyUnicode_FSConverter(source, &bytes)) return -1;
        Py_BEGIN_ALLOW_THREADS
        st = acqe_open_path(PyBytes_AS_STRING(bytes), &opts, &self->f, &err);
        Py_END_ALLOW_THREADS
        Py_DECREF(bytes);
    } else {
        if (PyObject_GetBuffer(source, &self->view, PyBUF_SIMPLE) < 0) return -1;
        self->has_view = 1;
        Py_BEGIN_ALLOW_THREADS
        st = acqe_open_buffer(self->view.buf, (size_t)self->view.len, &opts, &self->f, &err);
        Py_END_ALLOW_THREADS
    }
    if (st) {
        release(self);
        raise_error(&err);
        return -1;
    }
    return 0;
}

static PyObject *File_close(FileObject *self, PyObject *unused) {
    (void)unused;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "cannot close: a decode is running on another thread");
        return NULL;
    }
    release(self);
    Py_RETURN_NONE;
}

static PyObject *File_enter(FileObject *self, PyObject *unused) {
    (void)unused;
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *File_exit(FileObject *self, PyObject *args) {
    (void)args;
    return File_close(self, NULL);
}

static PyObject *File_header(FileObject *self, PyObject *unused) {
    acqe_header_info h;
    (void)unused;
    if (check_open(self)) return NULL;
    acqe_get_header(self->f, &h);
    return Py_BuildValue("{s:(HH),s:I,s:K,s:K,s:K,s:I,s:y#}", "version", h.major, h.minor, "alignment", h.alignment,
                         "required_features", (unsigned long long)h.required_features, "optional_features",
                         (unsigned long long)h.optional_features, "file_length", (unsigned long long)h.file_length,
                         "section_count", h.section_count, "footer_sha256", (const char *)h.footer_sha256,
                         (Py_ssize_t)32);
}

static PyObject *File_metadata(FileObject *self, PyObject *unused) {
    size_t n;
    const uint8_t *p;
    (void)unused;
    if (check_open(self)) return NULL;
    p = acqe_metadata(self->f, &n);
    return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
}

static PyObject *File_tensors(FileObject *self, PyObject *unused) {
    size_t i, n;
    PyObject *list;
    (void)unused;
    if (check_open(self)) return NULL;
    n = acqe_tensor_count(self->f);
    list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (i = 0; i < n; i++) {
        const acqe_tensor_info *t = acqe_tensor(self->f, i);
        PyObject *shape = PyTuple_New(t->rank), *item;
        uint32_t k;
        if (!shape) {
            Py_DECREF(list);
            return NULL;
        }
        for (k = 0; k < t->rank; k++) PyTuple_SET_ITEM(shape, k, PyLong_FromUnsignedLongLong(t->shape[k]));
        item = Py_BuildValue("(s#NsssKKKKk)", t->name, (Py_ssize_t)t->name_length, shape,
                             acqe_dtype_name(t->stored_dtype), acqe_dtype_name(t->decoded_dtype),
                             acqe_codec_name(t->codec), (unsigned long long)t->numel,
                             (unsigned long long)t->payload_offset, (unsigned long long)t->payload_length,
                             (unsigned long long)t->checked_length, (unsigned long)t->payload_crc32);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

static PyObject *File_find(FileObject *self, PyObject *arg) {
    Py_ssize_t n;
    const char *s;
    if (check_open(self)) return NULL;
    s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!s) return NULL;
    return PyLong_FromLongLong((long long)acqe_find_tensor(self->f, s, (size_t)n));
}

static PyObject *File_assets(FileObject *self, PyObject *unused) {
    const acqe_asset *a;
    size_t n, i;
    acqe_error err;
    acqe_status st;
    PyObject *d;
    (void)unused;
    if (check_open(self)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    st = acqe_assets(self->f, &a, &n, &err);
    Py_END_ALLOW_THREADS
    if (st) return raise_error(&err);
    d = PyDict_New();
    if (!d) return NULL;
    for (i = 0; i < n; i++) {
        PyObject *v = PyBytes_FromStringAndSize((const char *)a[i].data, (Py_ssize_t)a[i].size);
        if (!v || PyDict_SetItemString(d, a[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *File_output_nbytes(FileObject *self, PyObject *args) {
    Py_ssize_t index;
    PyObject *dt = Py_None;
    acqe_dtype d;
    uint64_t bytes;
    acqe_error err;
    acqe_status st;
    const acqe_tensor_info *t;
    if (!PyArg_ParseTuple(args, "n|O", &index, &dt)) return NULL;
    if (check_open(self) || parse_dtype(dt, &d)) return NULL;
    t = index >= 0 ? acqe_tensor(self->f, (size_t)index) : NULL;
    if (!t) {
        PyErr_SetString(PyExc_IndexError, "tensor index out of range");
        return NULL;
    }
    st = acqe_output_size(t, d, &bytes, &err);
    if (st) return raise_error(&err);
    return PyLong_FromUnsignedLongLong(bytes);
}

static PyObject *File_decode_into(FileObject *self, PyObject *args) {
    Py_ssize_t index;
    PyObject *out, *dt = Py_None;
    int threads = 1;
    acqe_dtype d;
    Py_buffer view;
    acqe_error err;
    acqe_status st;
    if (!PyArg_ParseTuple(args, "nO|Oi", &index, &out, &dt, &threads)) return NULL;
    if (check_open(self) || parse_dtype(dt, &d)) return NULL;
    if (index < 0 || (size_t)index >= acqe_tensor_count(self->f)) {
        PyErr_SetString(PyExc_IndexError, "tensor index out of range");
        return NULL;
    }
    if (PyObject_GetBuffer(out, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = acqe_decode(self->f, (size_t)index, d, view.buf, (size_t)view.len, threads, &err);
    Py_END_ALLOW_THREADS
    self->busy--;
    PyBuffer_Release(&view);
    if (st) return raise_error(&err);
    Py_RETURN_NONE;
}

static PyObject *File_verify(FileObject *self, PyObject *args) {
    int threads = 1;
    acqe_verify_report rep;
    acqe_error err;
    acqe_status st;
    if (!PyArg_ParseTuple(args, "|i", &threads)) return NULL;
    if (check_open(self)) return NULL;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = acqe_verify(self->f, threads, &rep, &err);
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st) return raise_error(&err);
    return Py_BuildValue("{s:K,s:K,s:K,s:d,s:L}", "tensors", (unsigned long long)rep.tensors, "decoded_bytes",
                         (unsigned long long)rep.decoded_bytes, "payload_bytes", (unsigned long long)rep.payload_bytes,
                         "max_expansion", rep.max_expansion, "max_expansion_tensor",
                         (long long)rep.max_expansion_tensor);
}

static PyObject *File_set_max_decoded_bytes(FileObject *self, PyObject *arg) {
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || check_open(self)) return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a decode is running on another thread");
        return NULL;
    }
    acqe_set_max_decoded_bytes(self->f, n);
    Py_RETURN_NONE;
}

static PyMethodDef File_methods[] = {
    {"close", (PyCFunction)File_close, METH_NOARGS, "Close the file (unmap it, release the buffer)."},
    {"__enter__", (PyCFunction)File_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)File_exit, METH_VARARGS, NULL},
    {"header", (PyCFunction)File_header, METH_NOARGS, "Header fields as a dict."},
    {"metadata", (PyCFunction)File_metadata, METH_NOARGS, "The validated METADATA JSON text (bytes)."},
    {"tensors", (PyCFunction)File_tensors, METH_NOARGS,
     "[(name, shape, stored_dtype, decoded_dtype, codec, numel, payload_offset, payload_length, "
     "checked_length, payload_crc32)] in directory order."},
    {"find", (PyCFunction)File_find, METH_O, "Index of the tensor with this name, or -1."},
    {"assets", (PyCFunction)File_assets, METH_NOARGS, "{name: bytes} (the ASSETS section, CRC-checked)."},
    {"output_nbytes", (PyCFunction)File_output_nbytes, METH_VARARGS,
     "output_nbytes(index, dtype=None): bytes decode_into writes."},
    {"decode_into", (PyCFunction)File_decode_into, METH_VARARGS,
     "decode_into(index, out, dtype=None, threads=1): decode into the writable C-contiguous buffer `out` "
     "(native byte order); dtype None gives the decoded dtype, 'float32'/'float16'/'bfloat16' convert a "
     "floating tensor. The GIL is released."},
    {"verify", (PyCFunction)File_verify, METH_VARARGS, "verify(threads=1): everything spec section 14 lists."},
    {"set_max_decoded_bytes", (PyCFunction)File_set_max_decoded_bytes, METH_O,
     "Limit on one tensor's decoded bytes (0: the default, 16 GiB)."},
    {NULL, NULL, 0, NULL}};

static PyType_Slot File_slots[] = {
    {Py_tp_dealloc, (void *)File_dealloc},
    {Py_tp_init, (void *)File_init},
    {Py_tp_new, (void *)PyType_GenericNew},
    {Py_tp_methods, (void *)File_methods},
    {Py_tp_doc, (void *)"File(source, max_decoded_bytes=0): an .acqe file read by libacqe (a path or a buffer)."},
    {0, NULL}};

static PyType_Spec File_spec = {"_libacqe.File", sizeof(FileObject), 0, Py_TPFLAGS_DEFAULT, File_slots};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_libacqe",
                                    "libacqe, the C reader of .acqe files (spec/ACQE.md).", -1, NULL,
                                    NULL, NULL, NULL, NULL};

static PyObject *init_module(void) {
    PyObject *m, *type;
    m = PyModule_Create(&module);
    if (!m) return NULL;
    type = PyType_FromSpec(&File_spec);
    LibAcqeError = PyErr_NewExceptionWithDoc(
        "_libacqe.LibAcqeError", "libacqe error: args are (category, message); .category, .message", NULL, NULL);
    if (!type || !LibAcqeError || PyModule_AddObject(m, "File", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(LibAcqeError);
    if (PyModule_AddObject(m, "LibAcqeError", LibAcqeError) < 0 ||
        PyModule_AddStringConstant(m, "lib_version", acqe_lib_version()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

PyMODINIT_FUNC PyInit__libacqe(void) { return init_module(); }
