// What summing the gradients over MPI ranks costs (docs/data-parallel.md): diffuse's sum in rank
// order (MpiCommunicator::sum: MPI_Alltoallv, the additions, MPI_Allgatherv) against MPI_Allreduce, on
// the reference U-Net's 1,624,577 float gradients (6.5 MB), on the prompt model's 2,214,977, and on
// one double (the stop flag: latency alone). Each iteration starts after a barrier, so that it times
// the transfer, not a rank waiting for another. Run on 2 ranks:
//   mpirun -np 2 build/release/benchmarks/diffuse_mpi_sum_bench
// Every rank runs the same benchmarks with a fixed iteration count (an adaptive count could differ
// between ranks and leave one waiting in a collective); rank 0 reports.

#include <diffuse/parallel/mpi.hpp>

#include <benchmark/benchmark.h>
#include <mpi.h>

#include <cstdio>
#include <vector>

namespace {

template <class T>
void BM_diffuse_ordered_sum(benchmark::State& state) {
    diffuse::MpiCommunicator world;
    std::vector<T> data(static_cast<std::size_t>(state.range(0)), T(1));
    for (auto _ : state) {
        state.PauseTiming();
        MPI_Barrier(MPI_COMM_WORLD);
        state.ResumeTiming();
        world.sum(data.data(), static_cast<diffuse::Index>(data.size()));
        benchmark::DoNotOptimize(data.data());
    }
    state.counters["ranks"] = world.size();
    state.counters["MB"] = static_cast<double>(data.size() * sizeof(T)) / 1e6;
}

template <class T>
void BM_mpi_allreduce(benchmark::State& state) {
    std::vector<T> data(static_cast<std::size_t>(state.range(0)), T(1));
    const MPI_Datatype type = diffuse::detail::mpi_type<T>();
    for (auto _ : state) {
        state.PauseTiming();
        MPI_Barrier(MPI_COMM_WORLD);
        state.ResumeTiming();
        MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()), type, MPI_SUM, MPI_COMM_WORLD);
        benchmark::DoNotOptimize(data.data());
    }
    state.counters["MB"] = static_cast<double>(data.size() * sizeof(T)) / 1e6;
}

constexpr long reference_unet = 1624577, prompt_model = 2214977;

BENCHMARK_TEMPLATE(BM_diffuse_ordered_sum, float)->Arg(reference_unet)->Arg(prompt_model)->Iterations(100)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_mpi_allreduce, float)->Arg(reference_unet)->Arg(prompt_model)->Iterations(100)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_diffuse_ordered_sum, double)->Arg(1)->Iterations(2000)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_mpi_allreduce, double)->Arg(1)->Iterations(2000)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
    diffuse::MpiSession mpi(argc, argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank != 0 && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 reports
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
