# alphabar_t against t/T for the linear and cosine schedules, as in Improved DDPM's figure 5
# (Nichol & Dhariwal 2021), from two CSVs written by diffuse_schedule:
#
#   diffuse_schedule --schedule linear --timesteps 1000 > linear.csv
#   diffuse_schedule --schedule cosine --timesteps 1000 > cosine.csv
#   gnuplot -e "linear='linear.csv'; cosine='cosine.csv'; out='alphas_cumprod.png'" alphas_cumprod.gp
#
# Row t of a CSV (t = 0 .. T-1) holds alphabar after step t, alphabar(t + 1) in the paper's continuous
# time, so it is drawn at (t + 1) / T (the curves begin next to alphabar(0) = 1 at t/T = 0).

if (!exists("linear") || !exists("cosine") || !exists("out")) {
    print "usage: gnuplot -e \"linear='linear.csv'; cosine='cosine.csv'; out='alphas_cumprod.png'\" alphas_cumprod.gp"
    exit status 2
}

set datafile separator comma
# T of each file: the number of data rows (the header row is skipped by `every ::1`).
stats linear using 1 every ::1 nooutput
T_linear = STATS_records
stats cosine using 1 every ::1 nooutput
T_cosine = STATS_records

set encoding utf8
# pngcairo (antialiased) where this gnuplot has it, as Debian's gnuplot-nox does; else libgd's png.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 800,560 enhanced font "sans,13" linewidth 2
} else {
    set terminal png size 800,560 enhanced font "sans,13" linewidth 2
}
set output out

set title "ᾱ_t throughout diffusion: linear and cosine schedules" font "sans,15"
set xlabel "diffusion step (t/T)"
set ylabel "ᾱ_t  (alphas\\_cumprod)"
set xrange [0:1]
set yrange [0:1.02]
set xtics 0.2
set ytics 0.2
set mxtics 2
set mytics 2
set grid xtics ytics mxtics mytics lc rgb "#dddddd" lw 0.5
set key top right box opaque samplen 2 spacing 1.3
set border lw 0.7

plot linear using (($1 + 1) / T_linear):4 every ::1 with lines lc rgb "#1f77b4" \
         title sprintf("linear (DDPM), T = %d", T_linear), \
     cosine using (($1 + 1) / T_cosine):4 every ::1 with lines lc rgb "#ff7f0e" \
         title sprintf("cosine (Improved DDPM), T = %d", T_cosine)
