// The data-parallel tests' main(): MPI around Catch2's runner, run on 2 ranks by CTest
// (mpiexec -n 2). Every rank runs every test in the same order, so their collective calls match; a
// test fails if it fails on any rank.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <diffuse/parallel/mpi.hpp>

#include <mpi.h>

int main(int argc, char** argv) {
    diffuse::MpiSession mpi(argc, argv);
    int failed = Catch::Session().run(argc, argv);
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return failed;
}
