"""A fix for Triton 3.6's interpreter (TRITON_INTERPRET=1) under NumPy >= 2.4.

The interpreter holds a scalar as a 1-element array, and Triton 3.6 turns it into a loop bound
with int(array), which NumPy 2.4 refuses ("only 0-dimensional arrays can be converted to Python
scalars"): every `range(G)` over a runtime size fails. Triton 3.8 squeezes the array first; this
does the same on any version, where the interpreter's private hook is still there.
"""
from triton.runtime import interpreter


def squeeze_scalar_index() -> None:
    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is None:
        return

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patched
