// Declared only: see rendezvous/store.h (nothing of this header is used).
#pragma once
#include <gloo/context.h>
