"""The OOM/policy service: vm.* sysctls, commit accounting, the OOM killer,
panic state and memory cgroups' limits."""
