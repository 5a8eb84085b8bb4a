"""Child process of local_model: llama.cpp's OpenAI-compatible server (`llama_cpp.server`), started with argv
such as `--model <gguf> --chat_format chatml-function-calling --host 127.0.0.1 --port N`.

With `--token_ids` it also serves `POST /v1/chat/completions/token_ids`, chat completions with exact token ids
and logprobs (see token_capture.py); without it the server is llama-cpp-python's, untouched.

With `--disable_extra_buffers` it first turns off llama.cpp's extra buffer types (the CPU "repack"/AMX buffers):
on some CPUs with AMX the AMX matmul path crashes the process (seen here: a segfault in
ggml_backend_amx_mul_mat), and for a 135M-parameter model they buy nothing.
"""

from __future__ import annotations

import sys

DISABLE_FLAG = "--disable_extra_buffers"
TOKEN_IDS_FLAG = "--token_ids"


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


def serve_token_ids() -> None:
    """Install the capture and add its route to every app the server creates (its `main` calls `create_app`)."""
    import llama_cpp.server.app as server_app

    from responses_api_models.local_model import token_capture

    token_capture.install()
    create_app = server_app.create_app

    def create_app_with_token_route(*args, **kwargs):  # type: ignore[no-untyped-def]
        app = create_app(*args, **kwargs)
        token_capture.add_route(app)
        return app

    server_app.create_app = create_app_with_token_route


def main() -> None:
    if DISABLE_FLAG in sys.argv:
        sys.argv.remove(DISABLE_FLAG)
        disable_extra_buffer_types()
    if TOKEN_IDS_FLAG in sys.argv:
        sys.argv.remove(TOKEN_IDS_FLAG)
        serve_token_ids()
    from llama_cpp.server.__main__ import main as serve

    serve()  # type: ignore[no-untyped-call]  # llama_cpp leaves it unannotated


if __name__ == "__main__":
    main()
