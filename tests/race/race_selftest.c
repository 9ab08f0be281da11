/*
 * The race check's own test: a plain counter incremented by two threads
 * without a lock. Helgrind with tests/race/helgrind.supp must report it (exit
 * 9), or the suppressions hide races in our code too and the race label
 * proves nothing. The TSan stage runs it as concurrency.tsan-selftest, its exit
 * code thrown away: tests/tsan_reports.sh must still fail on its report.
 */
#include <pthread.h>
#include <stdio.h>

static long counter;

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        counter++;
    return NULL;
}

int main(void)
{
    pthread_t a, b;
    pthread_create(&a, NULL, bump, NULL);
    pthread_create(&b, NULL, bump, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("counter %ld\n", counter);
    return 0;
}
