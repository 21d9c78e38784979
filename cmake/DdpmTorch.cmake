# Finds LibTorch inside the PyPI `torch` wheel of the project's virtual environment, and enables
# CUDA when that torch was built with it (the default Linux wheel is). Sets:
#   DDPM_PYTHON          the venv's python (cache; launch/setup.sh passes it)
#   DDPM_TORCH_SITE      its site-packages folder (NVIDIA's pip libraries live under nvidia/)
#   DDPM_CUDA_ENABLED    ON when CUDA sources are compiled and the NCCL path is built
set(DDPM_PYTHON "$ENV{DDPM_VENV}/bin/python3" CACHE FILEPATH
    "Python of the virtual environment holding the pinned torch wheel (see launch/setup.sh)")
if(NOT EXISTS "${DDPM_PYTHON}")
  message(FATAL_ERROR "DDPM_PYTHON='${DDPM_PYTHON}' does not exist. Run ./launch/setup.sh, or pass "
                      "-DDDPM_PYTHON=/path/to/venv/bin/python3 of an environment with torch installed.")
endif()

execute_process(
  COMMAND "${DDPM_PYTHON}" -c
    "import torch,os,sysconfig; print(torch.utils.cmake_prefix_path); print(torch.version.cuda or ''); print(sysconfig.get_paths()['purelib'])"
  OUTPUT_VARIABLE _ddpm_torch_info RESULT_VARIABLE _ddpm_rc ERROR_VARIABLE _ddpm_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _ddpm_rc EQUAL 0)
  message(FATAL_ERROR "Could not import torch with ${DDPM_PYTHON}: ${_ddpm_err}\n"
                      "Hint: ./launch/setup.sh installs the pinned wheel.")
endif()
string(REPLACE "\n" ";" _ddpm_torch_info "${_ddpm_torch_info}")
list(GET _ddpm_torch_info 0 _ddpm_prefix)
list(GET _ddpm_torch_info 1 _ddpm_torch_cuda)
list(GET _ddpm_torch_info 2 DDPM_TORCH_SITE)
list(APPEND CMAKE_PREFIX_PATH "${_ddpm_prefix}")

set(DDPM_CUDA_ENABLED OFF)
if(_ddpm_torch_cuda)
  # torch's own CMake config calls enable_language(CUDA): it needs nvcc even when we skip our
  # kernels. Hopper (sm_90) is the target; override with -DCMAKE_CUDA_ARCHITECTURES.
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(ENV{TORCH_CUDA_ARCH_LIST} "9.0")
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 20)
  if(DDPM_WITH_CUDA)
    set(DDPM_CUDA_ENABLED ON)
  endif()
endif()

find_package(Torch REQUIRED)
message(STATUS "ddpm: torch ${Torch_VERSION} from ${_ddpm_prefix}; CUDA ${_ddpm_torch_cuda}; "
               "our CUDA code ${DDPM_CUDA_ENABLED}")
