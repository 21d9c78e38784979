# Small helpers that keep every folder's CMakeLists.txt short:
#   ddpm_add_library(NAME SOURCES ... [PUBLIC_LIBS ...] [PRIVATE_LIBS ...])   -> ddpm_NAME, ddpm::NAME
#   ddpm_add_executable(NAME SOURCES ... LIBS ...)                           -> build/bin/NAME
#   ddpm_add_test(NAME SOURCES ... [LIBS ...] [LABELS ...] [MPI_NP 1 2 4] [TIMEOUT s] [FIXTURES ...])
#   ddpm_check_layering("target:allowed,..." ...)   the dependency direction of docs/DESIGN.md
include_guard(GLOBAL)

# The root-safe, container-safe OpenMPI settings (launch/openmpi.env, also read by launch/env.sh):
# DDPM_OPENMPI_ENV is a list of KEY=VALUE for a test's ENVIRONMENT. Editing the file re-configures.
set(_ddpm_openmpi_env_file ${PROJECT_SOURCE_DIR}/launch/openmpi.env)
file(STRINGS ${_ddpm_openmpi_env_file} DDPM_OPENMPI_ENV REGEX "^[A-Za-z_][A-Za-z0-9_]*=")
if(NOT DDPM_OPENMPI_ENV)
  message(FATAL_ERROR "${_ddpm_openmpi_env_file} holds no KEY=VALUE line: restore it from git")
endif()
set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_ddpm_openmpi_env_file})

find_program(DDPM_CCACHE ccache)
if(DDPM_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  # Shared across clones and worktrees (base_dir + no hash of the build dir); PCH-aware.
  set(_launcher /usr/bin/env CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} CCACHE_NOHASHDIR=1
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime ${DDPM_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_launcher})
endif()

function(ddpm_setup_pch)
  if(NOT DDPM_USE_PCH)
    return()
  endif()
  add_library(ddpm_pch OBJECT ${PROJECT_SOURCE_DIR}/cmake/ddpm_pch.cpp)
  target_link_libraries(ddpm_pch PRIVATE ddpm_options torch)
  target_precompile_headers(ddpm_pch PRIVATE ${PROJECT_SOURCE_DIR}/cmake/ddpm_pch.h)
endfunction()

function(_ddpm_use_pch target)
  if(DDPM_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM ddpm_pch)
  endif()
endfunction()

function(_ddpm_skip_pch_for_cuda)
  foreach(src IN LISTS ARGN)
    if(src MATCHES "\\.cu$")
      set_source_files_properties(${src} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
    endif()
  endforeach()
endfunction()

function(ddpm_add_library name)
  cmake_parse_arguments(A "" "" "SOURCES;PUBLIC_LIBS;PRIVATE_LIBS" ${ARGN})
  _ddpm_skip_pch_for_cuda(${A_SOURCES})
  add_library(ddpm_${name} STATIC ${A_SOURCES})
  add_library(ddpm::${name} ALIAS ddpm_${name})
  target_include_directories(ddpm_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(ddpm_${name} PUBLIC ddpm_options torch ${A_PUBLIC_LIBS} PRIVATE ${A_PRIVATE_LIBS})
  _ddpm_use_pch(ddpm_${name})
endfunction()

function(ddpm_add_executable name)
  cmake_parse_arguments(A "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ddpm_options ${A_LIBS})
  _ddpm_use_pch(${name})
endfunction()

# One GoogleTest executable per test file group. MPI_NP registers `mpirun -np N` variants
# (label `mpi`), oversubscribed and root-safe as docs/ENVIRONMENT.md describes (launch/openmpi.env).
function(ddpm_add_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "SOURCES;LIBS;LABELS;MPI_NP;FIXTURES;ENV" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 600)
  endif()
  add_executable(test_${name} ${A_SOURCES})
  target_link_libraries(test_${name} PRIVATE ddpm_options ddpm_testing GTest::gtest ${A_LIBS})
  _ddpm_use_pch(test_${name})
  # Every test gets the root-safe, container-safe OpenMPI settings: some start mpirun themselves.
  set(_env OMP_NUM_THREADS=1 DDPM_SOURCE_DIR=${PROJECT_SOURCE_DIR} DDPM_BINARY_DIR=${PROJECT_BINARY_DIR}
      DDPM_PYTHON=${DDPM_PYTHON} ${DDPM_OPENMPI_ENV} ${A_ENV})
  if(A_MPI_NP)
    foreach(np IN LISTS A_MPI_NP)
      add_test(NAME ${name}_np${np}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} --oversubscribe
                       $<TARGET_FILE:test_${name}>)
      set_tests_properties(${name}_np${np} PROPERTIES LABELS "mpi;${A_LABELS}" TIMEOUT ${A_TIMEOUT}
        PROCESSORS 2 ENVIRONMENT "${_env}")
      if(A_FIXTURES)
        set_tests_properties(${name}_np${np} PROPERTIES FIXTURES_REQUIRED "${A_FIXTURES}")
      endif()
    endforeach()
  else()
    add_test(NAME ${name} COMMAND test_${name})
    set_tests_properties(${name} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT} ENVIRONMENT "${_env}")
    if(A_FIXTURES)
      set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED "${A_FIXTURES}")
    endif()
  endif()
endfunction()

# Each rule is "target:allowed1,allowed2". A ddpm_* library linked outside its rule, or MPI/NCCL
# linked below trainer/ (other than by dist/), fails the configure step.
function(ddpm_check_layering)
  foreach(rule IN LISTS ARGN)
    string(REPLACE ":" ";" parts "${rule}")
    list(GET parts 0 target)
    list(LENGTH parts n)
    set(allowed "")
    if(n GREATER 1)
      list(GET parts 1 allowed)
      string(REPLACE "," ";" allowed "${allowed}")
    endif()
    if(NOT TARGET ${target})
      continue()
    endif()
    get_target_property(libs ${target} LINK_LIBRARIES)
    get_target_property(ilibs ${target} INTERFACE_LINK_LIBRARIES)
    foreach(lib IN LISTS libs ilibs)
      string(REGEX REPLACE "^ddpm::" "ddpm_" lib "${lib}")
      string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" lib "${lib}")
      if(lib MATCHES "^ddpm_" AND NOT lib MATCHES "^ddpm_(options|pch)$" AND NOT lib IN_LIST allowed)
        message(FATAL_ERROR "Layering: ${target} links ${lib}; docs/DESIGN.md allows only [${allowed}]")
      endif()
      if(lib MATCHES "(MPI::|nccl)" AND NOT target MATCHES "^ddpm_(dist|trainer)$")
        message(FATAL_ERROR "Layering: ${target} links ${lib}; only dist/ and trainer/ may use MPI or NCCL")
      endif()
    endforeach()
  endforeach()
endfunction()
