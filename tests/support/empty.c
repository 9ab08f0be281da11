/* Keeps the test-support library non-empty. */
typedef int flashgate_testsupport_empty_t;
