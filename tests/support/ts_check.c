/*
 * Every cmocka program of the suite says which check failed the moment it
 * fails, on stderr. cmocka keeps a failing assertion's message (the values,
 * then "file:line: error: Failure!") in a buffer it prints only after the
 * test's teardown has returned; a test abandoned mid-way by its failing check
 * (a relay thread and broker still running, a spool closed under them) can
 * die in that teardown, and the program then exits without the message
 * (unit.oq_relay under a relay mutant: exit 255 and nothing said). libcmocka
 * exports cm_print_error and calls it through its PLT, so this definition,
 * linked into each test program (tests/CMakeLists.txt: --undefined), takes
 * its place: it writes the message at once with one write(2), then hands it
 * to cmocka's own, which prints it again in its summary as before.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void cm_print_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

void cm_print_error(const char *format, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(msg, sizeof(msg), format, ap);
    va_end(ap);
    if (n < 0)
        return;
    char line[2100];
    int k = snprintf(line, sizeof(line), "cmocka: %s%s", msg,
                     n > 0 && msg[strlen(msg) - 1] == '\n' ? "" : "\n");
    if (k > 0) {
        ssize_t w =
            write(STDERR_FILENO, line, (size_t)k < sizeof(line) ? (size_t)k : sizeof(line) - 1);
        (void)w;
    }
    void (*real)(const char *, ...) =
        (void (*)(const char *, ...))dlsym(RTLD_NEXT, "cm_print_error");
    if (real)
        real("%s", msg);
}
