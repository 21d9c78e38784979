// Beta schedules (placeholder translation unit until the diffusion core lands).
