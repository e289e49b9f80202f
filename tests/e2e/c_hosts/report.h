/*
 * report.h -- how both C hosts report to the Python test (not part of a driver):
 * "STEP ..." lines and one "RESULT fail <why>" (exit 1) on stdout, the wire transcript
 * (">>" written, "<<" read, and the bytes, escaped, the first 160 of each) on stderr.
 */
#ifndef C_HOSTS_REPORT_H
#define C_HOSTS_REPORT_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void fail(const char *fmt, ...)
{
    va_list ap;
    printf("RESULT fail ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    exit(1);
}

static void step(const char *fmt, ...)
{
    va_list ap;
    printf("STEP ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static void wire(const char *dir, const unsigned char *p, size_t n)
{
    size_t i, shown = n > 160 ? 160 : n;
    fprintf(stderr, "%s ", dir);
    for (i = 0; i < shown; i++)
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            fputc(p[i], stderr);
        else
            fprintf(stderr, "\\x%02x", p[i]);
    if (shown < n)
        fprintf(stderr, "...(+%zu)", n - shown);
    fputc('\n', stderr);
}

#endif
