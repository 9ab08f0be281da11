# flashgate-load plots. flashgate-load copies this file into the report directory with
# the run's marks set at its top; redraw there with: gnuplot plots.gp
# Inputs: throughput.dat (answers per second by type), stock.dat (units accepted per
# second), stock_left.dat (the stock left over time), latency.dat (buy latency
# percentiles per second).
# Outputs: throughput.png, stock.png, latency.png, all over the same x range.
if (!exists("sale_start")) sale_start = 0
if (!exists("sold_out")) sold_out = -1
if (!exists("xmax")) xmax = 0
if (!exists("stock")) stock = 0
if (!exists("latency_target_ms")) latency_target_ms = 50

set terminal pngcairo size 1100,480 font "sans,10" noenhanced
set grid ytics lc rgb "#dddddd"
set key outside right top vertical
set xlabel "time since the run started (s); each point covers one second"
set style fill solid 0.9 noborder
set boxwidth 0.9 relative
# One x range and the same margins for every chart, so that a second lines up across them.
if (xmax > 0) { set xrange [0:xmax] } else { set xrange [0:*] }
set lmargin at screen 0.07
set rmargin at screen 0.82
set arrow 1 from sale_start, graph 0 to sale_start, graph 1 nohead lc rgb "#cc0000" dt 2 lw 1.5
set label 1 "sale starts" at sale_start, graph 0.96 offset 0.5,0 tc rgb "#cc0000"
if (sold_out >= 0) {
    set arrow 2 from sold_out, graph 0 to sold_out, graph 1 nohead lc rgb "#1a7f1a" lw 2
    set label 2 sprintf("sold out at %.2f s", sold_out) at sold_out, graph 0.88 offset 0.5,0 \
        tc rgb "#1a7f1a"
}

set output "throughput.png"
set title "Answers per second by type (stacked)"
set ylabel "answers / s"
set yrange [0:*]
# columns: 1 t, 2 sent, 3 202, 4 409, 5 410, 6 425, 7 429, 8 503, 9 other4xx, 10 5xx, 11 err+timeout, 12 poll
plot "throughput.dat" using ($1+0.5):($3+$4+$5+$6+$7+$8+$9+$10+$11) with boxes lc rgb "#7f7f7f" title "error/timeout", \
     "" using ($1+0.5):($3+$4+$5+$6+$7+$8+$9+$10) with boxes lc rgb "#8c564b" title "5xx", \
     "" using ($1+0.5):($3+$4+$5+$6+$7+$8+$9) with boxes lc rgb "#e377c2" title "other 4xx", \
     "" using ($1+0.5):($3+$4+$5+$6+$7+$8) with boxes lc rgb "#d62728" title "503 shed", \
     "" using ($1+0.5):($3+$4+$5+$6+$7) with boxes lc rgb "#ff7f0e" title "429 limited", \
     "" using ($1+0.5):($3+$4+$5+$6) with boxes lc rgb "#bcbd22" title "425 early", \
     "" using ($1+0.5):($3+$4+$5) with boxes lc rgb "#1f77b4" title "410 sold out", \
     "" using ($1+0.5):($3+$4) with boxes lc rgb "#9467bd" title "409 limit", \
     "" using ($1+0.5):3 with boxes lc rgb "#2ca02c" title "202 accepted", \
     "" using ($1+0.5):12 with linespoints lc rgb "#17becf" pt 7 ps 0.5 title "status polls", \
     "" using ($1+0.5):2 with lines lc rgb "#000000" lw 1.5 title "requests sent"

set output "stock.png"
set title sprintf("Units accepted per second and stock left (stock %d)", stock)
set ylabel "units"
set yrange [0:*]
# stock.dat: 1 t, 2 units accepted, 3 orders accepted; stock_left.dat: 1 time (s), 2 stock left
if (stock > 0) {
    plot "stock.dat" using ($1+0.5):2 with boxes lc rgb "#2ca02c" title "units accepted / s", \
         "stock_left.dat" using 1:2 with steps lc rgb "#1f77b4" lw 2 title "stock left"
} else {
    plot "stock.dat" using ($1+0.5):2 with boxes lc rgb "#2ca02c" title "units accepted / s"
}

set output "latency.png"
set title "Buy latency per second, from the scheduled send time (log scale)"
set ylabel "milliseconds"
set logscale y
set yrange [*:*]
set format y "%g"
plot "latency.dat" using ($1+0.5):2 with linespoints lc rgb "#2ca02c" pt 7 ps 0.5 lw 1.5 title "p50", \
     "" using ($1+0.5):3 with linespoints lc rgb "#1f77b4" pt 7 ps 0.5 lw 1.5 title "p90", \
     "" using ($1+0.5):4 with linespoints lc rgb "#ff7f0e" pt 7 ps 0.5 lw 1.5 title "p99", \
     "" using ($1+0.5):5 with linespoints lc rgb "#d62728" pt 7 ps 0.5 lw 1 title "p99.9", \
     "" using ($1+0.5):6 with lines lc rgb "#7f7f7f" dt 3 title "max", \
     latency_target_ms with lines lc rgb "#cc0000" dt 2 lw 1.5 title sprintf("target %g ms", latency_target_ms)
