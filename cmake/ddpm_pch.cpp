// Anchor translation unit of the ddpm_pch object library (see cmake/DdpmTargets.cmake).
