// A noise schedule's tables as CSV, one row per timestep: the numbers the forward process, the
// posterior and the samplers read (Ho et al. 2020; Nichol & Dhariwal 2021). Every value is printed
// with max_digits10 significant digits, so reading it back gives the same double.
//
//   diffuse_schedule --schedule cosine --timesteps 1000 > cosine.csv
//   gnuplot -e "linear='linear.csv'; cosine='cosine.csv'; out='alphas_cumprod.png'" plots/alphas_cumprod.gp

#include "common/cli.hpp"

#include <diffuse/schedule/named.hpp>
#include <diffuse/schedule/noise_schedule.hpp>

#include <iostream>
#include <stdexcept>
#include <limits>
#include <string>
#include <utility>
#include <vector>

int main(int argc, char** argv) {
    CLI::App app{"Prints the tables of a noise schedule (NoiseSchedule<double>) as CSV on stdout.",
                 "diffuse_schedule"};
    std::string names;
    for (const auto& name : diffuse::schedule_names()) names += (names.empty() ? "" : ", ") + name;
    std::string schedule = "linear";
    int timesteps = 1000;
    app.add_option("--schedule", schedule, "The beta schedule: one of " + names)->capture_default_str();
    app.add_option("--timesteps", timesteps, "The number of diffusion steps T")->capture_default_str();

    return examples::run(app, argc, argv, [&] {
        const diffuse::NoiseSchedule<double> s(diffuse::make_betas(schedule, timesteps));
        using Getter = const diffuse::Table<double>& (diffuse::NoiseSchedule<double>::*)() const;
        using N = diffuse::NoiseSchedule<double>;
        const std::vector<std::pair<const char*, Getter>> columns = {
            {"betas", &N::betas},
            {"alphas", &N::alphas},
            {"alphas_cumprod", &N::alphas_cumprod},
            {"alphas_cumprod_prev", &N::alphas_cumprod_prev},
            {"alphas_cumprod_next", &N::alphas_cumprod_next},
            {"sqrt_alphas_cumprod", &N::sqrt_alphas_cumprod},
            {"sqrt_one_minus_alphas_cumprod", &N::sqrt_one_minus_alphas_cumprod},
            {"log_one_minus_alphas_cumprod", &N::log_one_minus_alphas_cumprod},
            {"sqrt_recip_alphas_cumprod", &N::sqrt_recip_alphas_cumprod},
            {"sqrt_recipm1_alphas_cumprod", &N::sqrt_recipm1_alphas_cumprod},
            {"posterior_variance", &N::posterior_variance},
            {"posterior_log_variance_clipped", &N::posterior_log_variance_clipped},
            {"posterior_mean_coef1", &N::posterior_mean_coef1},
            {"posterior_mean_coef2", &N::posterior_mean_coef2},
            {"snr", &N::snr},
        };
        std::ostream& out = std::cout;
        out.precision(std::numeric_limits<double>::max_digits10);
        out << 't';
        for (const auto& column : columns) out << ',' << column.first;
        out << '\n';
        for (int t = 0; t < s.num_timesteps(); ++t) {
            out << t;
            for (const auto& column : columns) out << ',' << (s.*column.second)()[t];
            out << '\n';
        }
        out.flush();
        if (!out) throw std::runtime_error("cannot write to stdout");
    });
}
