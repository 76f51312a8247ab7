// Declared only: see rendezvous/store.h. ProcessGroupGloo.hpp's inline setTimeout calls this
// method (through a pointer); the shim never calls it, and never creates or sizes a Context.
#pragma once

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

} // namespace gloo
