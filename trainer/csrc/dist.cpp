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
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

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

// Synchronised batch norm, as torch.nn.SyncBatchNorm's autograd function
// (torch/nn/modules/_functions.py) computes it: the forward gathers every rank's per-channel
// mean, biased variance and count and combines them into the global batch's statistics
// (normalising with them and updating the running statistics, the variance unbiased); the
// backward all-reduces the per-channel sums of dy and dy * (x - mean) and finishes the input's
// gradient with the global ones. The weight's and bias's gradients are this rank's share (the
// trainer sums them over the ranks with the other gradients, as DDP does). The arithmetic is in
// float32 (float64 for a float64 input); the output takes the input's kind. The function keeps
// the backend alive until its backward has run.
class SyncBatchNorm : public torch::autograd::Function<SyncBatchNorm> {
 public:
  static std::vector<int64_t> reduced_dims(const at::Tensor& x) {
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < x.dim(); ++d) {
      dims.push_back(d);
    }
    return dims;
  }

  // The shape that broadcasts a [C] tensor over x.
  static std::vector<int64_t> channel_shape(const at::Tensor& x) {
    std::vector<int64_t> shape(x.dim(), 1);
    shape[1] = x.size(1);
    return shape;
  }

  static at::ScalarType compute_kind(const at::Tensor& x) {
    return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  }

  static at::Tensor forward(
      torch::autograd::AutogradContext* ctx,
      at::Tensor input,
      at::Tensor weight,
      at::Tensor bias,
      at::Tensor running_mean,
      at::Tensor running_var,
      double momentum,
      double eps,
      c10::intrusive_ptr<c10d::Backend> backend) {
    TORCH_CHECK(
        input.dim() >= 2, "sync batch norm: the input needs a batch and a channel axis, not ",
        input.sizes());
    const auto kind = compute_kind(input);
    const auto x = input.to(kind);
    const int64_t channels = x.size(1);
    const auto dims = reduced_dims(x);
    const auto shape = channel_shape(x);
    const int64_t count = channels == 0 ? 0 : x.numel() / channels;
    at::Tensor mean, var;
    if (count > 0) {
      mean = x.mean(dims);
      var = (x - mean.view(shape)).square().mean(dims);
    } else {
      mean = at::zeros({channels}, x.options());
      var = at::zeros({channels}, x.options());
    }
    // Every rank's [mean, var, count], combined as torch's batch_norm_gather_stats_with_counts
    // does: the global mean weighs the means by the counts, the global variance adds each
    // rank's spread about the global mean.
    auto stats =
        at::cat({mean, var, at::full({1}, static_cast<double>(count), x.options())}).contiguous();
    const int world = backend->getSize();
    std::vector<at::Tensor> gathered;
    for (int r = 0; r < world; ++r) {
      gathered.push_back(at::empty_like(stats));
    }
    std::vector<std::vector<at::Tensor>> outs{gathered};
    std::vector<at::Tensor> ins{stats};
    backend->allgather(outs, ins)->wait();
    auto all = at::stack(outs[0]);
    auto means = all.narrow(1, 0, channels);
    auto vars = all.narrow(1, channels, channels);
    auto counts = all.narrow(1, 2 * channels, 1);
    const double total = counts.sum().item<double>();
    TORCH_CHECK(
        total > 1,
        "sync batch norm: expected more than 1 value per channel over all ranks when training, got ",
        total);
    auto global_mean = (means * counts).sum(0) / total;
    auto global_var = ((vars + (means - global_mean).square()) * counts).sum(0) / total;
    auto invstd = (global_var + eps).rsqrt();
    auto scale = invstd;
    if (weight.defined()) {
      scale = scale * weight.to(kind);
    }
    auto y = (x - global_mean.view(shape)) * scale.view(shape);
    if (bias.defined()) {
      y = y + bias.to(kind).view(shape);
    }
    {
      at::NoGradGuard no_grad;
      if (running_mean.defined()) {
        running_mean.mul_(1 - momentum).add_(global_mean.to(running_mean.scalar_type()), momentum);
      }
      if (running_var.defined()) {
        auto unbiased = global_var * (total / (total - 1));
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.scalar_type()), momentum);
      }
    }
    ctx->save_for_backward({input, weight, global_mean, invstd});
    ctx->saved_data["total"] = total;
    ctx->saved_data["backend"] = at::IValue::make_capsule(backend);
    return y.to(input.scalar_type());
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& input = saved[0];
    const auto& weight = saved[1];
    const auto& mean = saved[2];
    const auto& invstd = saved[3];
    const double total = ctx->saved_data["total"].toDouble();
    auto backend =
        c10::static_intrusive_pointer_cast<c10d::Backend>(ctx->saved_data["backend"].toCapsule());
    const auto kind = compute_kind(input);
    const auto x = input.to(kind);
    const int64_t channels = x.size(1);
    const auto dims = reduced_dims(x);
    const auto shape = channel_shape(x);
    auto dy = grads[0].to(kind);
    auto xmu = x - mean.view(shape);
    auto sum_dy = dy.sum(dims);
    auto sum_dy_xmu = (dy * xmu).sum(dims);
    at::Tensor grad_weight, grad_bias;
    if (weight.defined()) {
      grad_weight = (sum_dy_xmu * invstd).to(weight.scalar_type());
      grad_bias = sum_dy.to(weight.scalar_type());
    } else {
      grad_bias = sum_dy;
    }
    // The global sums, in one all-reduce.
    auto sums = at::cat({sum_dy, sum_dy_xmu}).contiguous();
    std::vector<at::Tensor> one{sums};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    backend->allreduce(one, o)->wait();
    auto mean_dy = sums.narrow(0, 0, channels) / total;
    auto mean_dy_xmu = sums.narrow(0, channels, channels) / total;
    auto scale = invstd;
    if (weight.defined()) {
      scale = scale * weight.to(kind);
    }
    auto grad_input = (dy - mean_dy.view(shape) -
                       xmu * (invstd.square() * mean_dy_xmu).view(shape)) *
        scale.view(shape);
    return {
        grad_input.to(input.scalar_type()),
        grad_weight,
        grad_bias,
        at::Tensor(),
        at::Tensor(),
        at::Tensor(),
        at::Tensor(),
        at::Tensor()};
  }
};

} // namespace

extern "C" {

// Batch norm in training mode over the batch of every rank of `group` (see SyncBatchNorm).
// weight, bias, running_mean and running_var may be null. *out receives a new tensor (owned by
// the caller, as tch owns the tensors it is given).
char* sf_dist_sync_batch_norm(
    void* group,
    at::Tensor* input,
    at::Tensor* weight,
    at::Tensor* bias,
    at::Tensor* running_mean,
    at::Tensor* running_var,
    double momentum,
    double eps,
    at::Tensor** out) {
  *out = nullptr;
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    auto or_undefined = [](at::Tensor* t) { return t == nullptr ? at::Tensor() : *t; };
    auto y = SyncBatchNorm::apply(
        *input,
        or_undefined(weight),
        or_undefined(bias),
        or_undefined(running_mean),
        or_undefined(running_var),
        momentum,
        eps,
        g->backend);
    *out = new at::Tensor(std::move(y));
  });
}

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
