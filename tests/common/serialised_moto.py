# moto's server with one lock around every request: see SERIALISED_MOTO in tests/common/moto.rs
# (also started by benches/hooks_load.rs with HOOKS_LOAD_BACKEND=aws and benches/soak.rs with
# SOAK_STATE=moto).
import os, sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
port = int(sys.argv[1])
os.environ["MOTO_PORT"] = str(port)
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serialised(environ, start_response):
    with lock:
        return list(app(environ, start_response))
run_simple("127.0.0.1", port, serialised, threaded=True)
