#pragma once
// The ranks of an MPI job as a diffuse::Communicator (parallel/communicator.hpp), for data-parallel
// training with `mpirun -np N program ...`. Needs MPI: link the diffuse::mpi target
// (find_package(diffuse CONFIG REQUIRED COMPONENTS mpi); Debian: openmpi-bin, libopenmpi-dev).
//
// The sum is a reduce-scatter and an all-gather, as a ring all-reduce moves the data (each rank
// sends and receives 2 (R-1)/R of the buffer), but the additions are diffuse's: the buffer is cut
// into R chunks, rank c receives every rank's chunk c (MPI_Alltoallv) and adds them in rank order
//     s = ((x_0 + x_1) + x_2) + ... + x_{R-1}
// then every rank receives every summed chunk (MPI_Allgatherv). MPI_Allreduce leaves the order of
// its additions to the implementation and its algorithm choice, so a run could change in the last
// bits with the library, the network or the message size; here it depends on the rank count alone.

#include "diffuse/core/error.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/parallel/communicator.hpp"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace diffuse {

/// A failed MPI call, with MPI's own message.
class mpi_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

namespace detail {

inline void check_mpi(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw mpi_error(std::string("diffuse: ") + call + " failed: " + std::string(text, static_cast<std::size_t>(length)));
}

template <class T>
MPI_Datatype mpi_type();
template <>
inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

}  // namespace detail

/// The ranks of an MPI communicator (MPI must be initialised: MpiSession).
class MpiCommunicator final : public Communicator {
  public:
    explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
        detail::check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        detail::check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
        // errors come back as codes, which check_mpi turns into exceptions, rather than aborting
        detail::check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    void sum(float* data, Index n) override { ordered_sum(data, n); }
    void sum(double* data, Index n) override { ordered_sum(data, n); }

    /// What the sums cost so far: calls, bytes of the summed buffers, seconds inside them.
    struct Traffic {
        long calls = 0;
        double bytes = 0.0;
        double seconds = 0.0;
    };
    const Traffic& traffic() const { return traffic_; }

  private:
    template <class T>
    void ordered_sum(T* data, Index n) {
        if (n < 0) detail::throw_invalid("diffuse::MpiCommunicator::sum", "n", n, ">= 0");
        if (n > std::numeric_limits<int>::max()) {
            detail::throw_invalid("diffuse::MpiCommunicator::sum", "n", n, "at most 2^31 - 1 values (MPI's int counts)");
        }
        const auto start = std::chrono::steady_clock::now();
        const int r = size_;
        // chunk c is [offsets[c], offsets[c] + counts[c])
        counts_.assign(static_cast<std::size_t>(r), 0);
        offsets_.assign(static_cast<std::size_t>(r), 0);
        for (int c = 0; c < r; ++c) {
            offsets_[static_cast<std::size_t>(c)] = static_cast<int>(n * c / r);
            counts_[static_cast<std::size_t>(c)] = static_cast<int>(n * (c + 1) / r - n * c / r);
        }
        const int mine = counts_[static_cast<std::size_t>(rank_)];
        std::vector<T>& received = buffer<T>();  // [R, mine]: every rank's chunk `rank_`
        received.resize(static_cast<std::size_t>(mine) * static_cast<std::size_t>(r));
        receive_counts_.assign(static_cast<std::size_t>(r), mine);
        receive_offsets_.resize(static_cast<std::size_t>(r));
        for (int s = 0; s < r; ++s) receive_offsets_[static_cast<std::size_t>(s)] = s * mine;
        const MPI_Datatype type = detail::mpi_type<T>();
        detail::check_mpi(MPI_Alltoallv(data, counts_.data(), offsets_.data(), type, received.data(), receive_counts_.data(),
                                        receive_offsets_.data(), type, comm_),
                          "MPI_Alltoallv");
        T* chunk = data + offsets_[static_cast<std::size_t>(rank_)];
        for (int i = 0; i < mine; ++i) {
            T s = received[static_cast<std::size_t>(i)];
            for (int k = 1; k < r; ++k) s += received[static_cast<std::size_t>(k) * static_cast<std::size_t>(mine) + static_cast<std::size_t>(i)];
            chunk[i] = s;
        }
        detail::check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, type, data, counts_.data(), offsets_.data(), type, comm_),
                          "MPI_Allgatherv");
        ++traffic_.calls;
        traffic_.bytes += static_cast<double>(n) * sizeof(T);
        traffic_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }

    template <class T>
    std::vector<T>& buffer() {
        if constexpr (std::is_same_v<T, float>) {
            return float_buffer_;
        } else {
            return double_buffer_;
        }
    }

    MPI_Comm comm_;
    int rank_ = 0;
    int size_ = 1;
    std::vector<int> counts_, offsets_, receive_counts_, receive_offsets_;  // [R]
    std::vector<float> float_buffer_;
    std::vector<double> double_buffer_;
    Traffic traffic_;
};

/// Whether this process was started by an MPI launcher (mpirun / mpiexec of Open MPI or MPICH, or
/// a PMIx-based one such as srun): a program can then initialise MPI and train data-parallel, and
/// run alone otherwise without touching MPI.
inline bool launched_by_mpi() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
        if (std::getenv(name) != nullptr) return true;
    }
    return false;
}

/// The ranks on this machine (for a thread count that does not oversubscribe its cores); 1 when the
/// launcher does not say.
inline int local_rank_count() {
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"}) {
        if (const char* value = std::getenv(name)) {
            const int n = std::atoi(value);
            if (n >= 1) return n;
        }
    }
    return 1;
}

/// MPI_Init on construction, MPI_Finalize on destruction. While it lives, a process that exits
/// without destroying it (std::exit on an error, an uncaught exception's terminate) takes the whole
/// job down with MPI_Abort, so that no other rank waits for it forever.
class MpiSession {
  public:
    MpiSession(int& argc, char**& argv) {
        detail::check_mpi(MPI_Init(&argc, &argv), "MPI_Init");
        std::atexit(abort_if_running);
        std::set_terminate([] {
            std::fputs("diffuse: uncaught exception; aborting every rank\n", stderr);
            MPI_Abort(MPI_COMM_WORLD, 1);
            std::abort();
        });
    }
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;
    ~MpiSession() { MPI_Finalize(); }

    /// Prints `message` (prefixed by the rank) and ends every rank of the job with exit code `code`.
    [[noreturn]] static void abort_job(const std::string& message, int code = 1) {
        int rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        std::fprintf(stderr, "%s (rank %d; ending every rank)\n", message.c_str(), rank);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
        std::abort();
    }

  private:
    static void abort_if_running() {
        int initialised = 0, finalised = 0;
        MPI_Initialized(&initialised);
        MPI_Finalized(&finalised);
        if (initialised && !finalised) {
            std::fputs("diffuse: a rank exited before MPI_Finalize; aborting every rank\n", stderr);
            std::fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
};

}  // namespace diffuse
