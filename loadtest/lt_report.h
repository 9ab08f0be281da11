/*
 * The rehearsal report: report.json (scenario, environment, figures, audit),
 * gnuplot data files + plots.gp -> two PNGs, and a self-contained report.html
 * with the PNGs inlined as data URIs.
 */
#ifndef LT_REPORT_H
#define LT_REPORT_H

#include "loadtest/lt_audit.h"
#include "loadtest/lt_run.h"
#include "loadtest/lt_scenario.h"

#include <stddef.h>

/*
 * Writes everything into dir (created if missing). src_dir is the repository
 * root (for loadtest/report/ templates), may be NULL. audit may be NULL.
 * Returns 0, or a negative cm_err_t with errbuf set; a missing gnuplot is not
 * an error (the HTML says the plots are missing).
 */
int lt_report_write(const char *dir, const char *src_dir, const lt_scenario_t *sc,
                    const char *scenario_path, const lt_results_t *res, const lt_audit_t *audit,
                    char *errbuf, size_t errlen);

#endif
