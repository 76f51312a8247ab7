// What c10d/ProcessGroupGloo.hpp needs to see of Gloo, declared, not Gloo itself.
//
// The PyTorch wheel ships c10d's headers but not Gloo's, which ProcessGroupGloo.hpp includes.
// Gloo is compiled into libtorch_cpu, and ProcessGroupGloo holds every Gloo object through a
// pointer (std::shared_ptr / std::unique_ptr), so the class's layout does not depend on Gloo's
// types: declaring them (with the one method the header's inline code calls, Context's
// setTimeout) is enough for the shim (dist.cpp) to construct the process group and call its
// exported methods. The one class the header derives from Gloo, GlooStore (a c10d
// store seen from Gloo), is never instantiated by the shim; the abstract base below declares the
// methods it overrides, with the signatures of Gloo's rendezvous/store.h (without the optional
// "v2" API, which the header leaves out unless GLOO_STORE_HAS_STORE_V2 is defined).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(
      const std::vector<std::string>& keys,
      const std::chrono::milliseconds& timeout) = 0;
};

} // namespace rendezvous
} // namespace gloo
