// The precompiled header: torch's frontend, compiled once (ddpm_pch) and reused by every target.
// Sources still include the narrow headers they need; this only makes them cheap.
#pragma once
#include <torch/torch.h>
