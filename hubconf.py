"""torch.hub entry point: `torch.hub.load(repo_dir, "inik_net", source="local")` from a clone."""
dependencies = ["torch", "numpy", "PIL", "skimage", "imagecodecs"]

from inik_fast import INIKNet, INIKNetConfig  # noqa: E402


def inik_net(pretrained: bool = True, checkpoint=None, backend: str = "auto", device="cpu") -> INIKNet:
    """INIKNet. pretrained: in eval mode with the bundled default weights, or those of
    `checkpoint` (any file `INIKNet.from_pretrained` takes); otherwise the release config,
    freshly initialised, in training mode."""
    if pretrained:
        return INIKNet.from_pretrained(checkpoint, device=device, backend=backend)
    if checkpoint is not None:
        raise ValueError("inik_net: checkpoint is given, but pretrained=False; expected one of them")
    return INIKNet(INIKNetConfig(), backend=backend).to(device)
