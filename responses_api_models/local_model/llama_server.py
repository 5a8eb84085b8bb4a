"""Child process of local_model: llama.cpp's OpenAI-compatible server (`llama_cpp.server`), started with argv
such as `--model <gguf> --chat_format chatml-function-calling --host 127.0.0.1 --port N`.

With `--disable_extra_buffers` it first turns off llama.cpp's extra buffer types (the CPU "repack"/AMX buffers):
on some CPUs with AMX the AMX matmul path crashes the process (seen here: a segfault in
ggml_backend_amx_mul_mat), and for a 135M-parameter model they buy nothing.
"""

from __future__ import annotations

import sys

DISABLE_FLAG = "--disable_extra_buffers"


def disable_extra_buffer_types() -> None:
    import llama_cpp.llama_cpp as bindings

    original = bindings.llama_model_default_params

    def default_params_without_extra_buffers():  # type: ignore[no-untyped-def]
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    # llama_cpp.Llama looks the function up on this module at call time, so patching the module is enough.
    bindings.llama_model_default_params = default_params_without_extra_buffers


def main() -> None:
    if DISABLE_FLAG in sys.argv:
        sys.argv.remove(DISABLE_FLAG)
        disable_extra_buffer_types()
    from llama_cpp.server.__main__ import main as serve

    serve()  # type: ignore[no-untyped-call]  # llama_cpp leaves it unannotated


if __name__ == "__main__":
    main()
