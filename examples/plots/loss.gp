# The training loss of diffuse_train against the step: every step's loss (light) and its smoothed
# value (an exponential average over about 50 steps), on a log scale, from the trainer's loss.csv
# (columns step, loss, loss_smoothed, lr, grad_norm, seconds):
#
#   gnuplot -e "data='out/train/loss.csv'; out='out/train/loss.png'" loss.gp

if (!exists("data") || !exists("out")) {
    print "usage: gnuplot -e \"data='loss.csv'; out='loss.png'\" loss.gp"
    exit status 2
}

set datafile separator comma
set encoding utf8
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 800,560 enhanced font "sans,13" linewidth 2
} else {
    set terminal png size 800,560 enhanced font "sans,13" linewidth 2
}
set output out

set title "diffuse\\_train: the simple loss ||ε − ε_θ(x_t, t, y)||²" font "sans,15"
set xlabel "step"
set ylabel "loss (mean squared error per pixel)"
set logscale y
set grid xtics ytics mytics lc rgb "#dddddd" lw 0.5
set key top right box opaque samplen 2 spacing 1.3
set border lw 0.7

plot data using 1:2 every ::1 with lines lc rgb "#a6c8e6" lw 0.5 title "loss of each step", \
     data using 1:3 every ::1 with lines lc rgb "#1f77b4" title "smoothed"
