// engine.h: everything a user of the engine includes.
#pragma once
#include "engine/autograd.h"
#include "engine/generator.h"
#include "engine/gradcheck.h"
#include "engine/npy.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "engine/version.h"
