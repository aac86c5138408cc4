/* What router/dataplane/_getrun.c reads of shared._codec's objects: a GET_MANY answer's entries as
 * offsets into the frame's payload, so they reach the client's answer without a copy. */
#ifndef RINGCACHE_CODEC_H
#define RINGCACHE_CODEC_H

#include <Python.h>

typedef struct {
    PyObject_HEAD
    Py_buffer view;         /* the payload the entries are read from, held while we live */
    Py_ssize_t n;           /* how many */
    Py_ssize_t *spans;      /* offset, length of each, in turn, into view.buf */
} ValueListObject;

#endif
