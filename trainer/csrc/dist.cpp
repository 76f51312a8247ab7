// The trainer's binding of c10d, PyTorch's distributed engine, which libtorch ships and tch does
// not bind: a TCPStore rendezvous, a process group (Gloo; NCCL when built with SF_NCCL), and the
// collectives the trainer uses, on tch's tensors (a tch Tensor is a pointer to an at::Tensor).
//
// Every function catches what c10d throws and returns it as a message (malloc'd, freed by
// sf_dist_free_error), or null on success: no C++ exception crosses into Rust. The Rust side
// (src/dist/mod.rs) checks arguments (contiguous tensors, same device) before calling.

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef SF_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

char* message(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, text.c_str(), text.size() + 1);
  }
  return out;
}

// Runs `body`, turning any exception into a message.
template <typename F>
char* guarded(F body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    // what() of a c10::Error carries a C++ backtrace; the message alone is what a user needs.
    return message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return message(e.what());
  } catch (...) {
    return message("unknown C++ exception in c10d");
  }
}

std::vector<at::Tensor> tensors(at::Tensor** ts, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    out.push_back(*ts[i]);
  }
  return out;
}

void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  for (auto& w : works) {
    w->wait();
  }
}

} // namespace

extern "C" {

void sf_dist_free_error(char* error) {
  std::free(error);
}

// Rendezvous at addr:port and make the process group. `serve`: this process serves the store
// there (rank 0, unless torchrun's agent already serves it) and waits for the other ranks;
// `prefix` keeps this group's keys apart from others in the same store.
char* sf_dist_new(
    const char* addr,
    int port,
    int rank,
    int world,
    int serve,
    const char* prefix,
    int64_t timeout_ms,
    int nccl,
    void** out) {
  *out = nullptr;
  return guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = serve != 0;
    // Every process counts itself in (clients too: that is what the server waits for), as
    // torch.distributed's TCPStore(world_size=...) does.
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;
    so.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> tcp =
        c10::make_intrusive<c10d::TCPStore>(std::string(addr), so);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    auto group = new Group();
    group->store = store;
    try {
      if (nccl != 0) {
#ifdef SF_NCCL
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = timeout;
        group->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(
            store, rank, world, options);
#else
        throw std::runtime_error(
            "NCCL was asked for, but this build has no NCCL (build the trainer with the `cuda` "
            "feature)");
#endif
      } else {
        auto options = c10d::ProcessGroupGloo::Options::create(timeout);
        const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
        if (ifname != nullptr && *ifname != '\0') {
          options->devices.push_back(
              c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        } else {
          options->devices.push_back(
              c10d::ProcessGroupGloo::createDefaultDevice());
        }
        options->threads = 2;
        group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
            store, rank, world, options);
      }
    } catch (...) {
      delete group;
      throw;
    }
    *out = group;
  });
}

void sf_dist_free(void* group) {
  try {
    delete static_cast<Group*>(group);
  } catch (...) {
  }
}

// Sums each tensor over the group, in place: all are queued, then all are waited for.
char* sf_dist_all_reduce_sum(void* group, at::Tensor** ts, int n) {
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      works.push_back(g->backend->allreduce(one, o));
    }
    wait_all(works);
  });
}

// outputs[r] receives rank r's `input` (all of its shape).
char* sf_dist_all_gather(void* group, at::Tensor* input, at::Tensor** outputs, int n) {
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    std::vector<std::vector<at::Tensor>> outs{tensors(outputs, n)};
    std::vector<at::Tensor> in{*input};
    g->backend->allgather(outs, in)->wait();
  });
}

// Each tensor takes root's values, in place.
char* sf_dist_broadcast(void* group, at::Tensor** ts, int n, int root) {
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      works.push_back(g->backend->broadcast(one, o));
    }
    wait_all(works);
  });
}

char* sf_dist_barrier(void* group) {
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    g->backend->barrier()->wait();
  });
}

} // extern "C"
