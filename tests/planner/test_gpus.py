import pytest

from planner.gpus import GPU_CATALOG, MIB, get_gpu


def test_catalog_covers_the_field():
    assert len(GPU_CATALOG) >= 20
    for name in ("rtx-3060-12gb", "rtx-3090", "rtx-4060-ti-16gb", "rtx-4080", "rtx-4090", "rtx-5090",
                 "rtx-a6000", "l4", "t4", "a10g", "v100-16gb", "v100-32gb", "a100-40gb", "a100-80gb",
                 "h100-80gb", "h200", "mi250", "mi300x"):
        assert name in GPU_CATALOG


@pytest.mark.parametrize("query, name", [
    ("4090", "rtx-4090"), ("RTX 4090", "rtx-4090"), ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("a100 80gb", "a100-80gb"), ("A100-SXM4-40GB", "a100-40gb"), ("my 3090", "rtx-3090"),
    ("H100 80GB HBM3", "h100-80gb"), ("AMD Instinct MI300X", "mi300x"), ("t4", "t4"),
])
def test_forgiving_gpu_names(query, name):
    assert get_gpu(query).name == name


def test_capacity_as_reported_by_the_tool():
    # nvidia-smi on the H200 lent to this project printed 143771 MiB (device KINDS.md, 2026-10-27).
    assert get_gpu("h200").capacity_bytes == 143771 * MIB
    assert get_gpu("4090").memory_mib == 24564


@pytest.mark.parametrize("query, mib", [("24GB", 24576), ("16 GiB", 16384), ("23028 MiB", 23028),
                                         ("custom:12GB", 12288)])
def test_custom_capacity(query, mib):
    gpu = get_gpu(query)
    assert gpu.memory_mib == mib and gpu.vendor == "custom"


def test_unknown_gpu_suggests():
    with pytest.raises(ValueError, match="did you mean rtx-4090"):
        get_gpu("rtx 4099")


def test_catalog_knows_bf16_and_fp8_support():
    """bf16 from compute capability 8.0 (Ampere), fp8 from 8.9 (Ada); AMD CDNA2/CDNA3 by arch."""
    for gpu in GPU_CATALOG.values():
        assert isinstance(gpu.bf16, bool) and isinstance(gpu.fp8, bool), gpu.name
        if gpu.vendor == "nvidia":
            major, minor = map(int, gpu.compute_capability.split("."))
            assert gpu.bf16 == ((major, minor) >= (8, 0)), gpu.name
            assert gpu.fp8 == ((major, minor) >= (8, 9)), gpu.name
    assert [get_gpu(n).bf16 for n in ("t4", "v100-16gb", "v100-32gb")] == [False, False, False]
    assert all(get_gpu(n).bf16 for n in ("a100", "4090", "h100", "rtx-5090", "l4", "mi250", "mi300x"))
    assert get_gpu("h100").fp8 and get_gpu("mi300x").fp8 and not get_gpu("a100").fp8
    assert get_gpu("24GB").bf16 is None          # a bare capacity: not known
