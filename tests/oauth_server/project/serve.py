"""Bootstrap (schema, user, application) and serve the test OAuth server.

Run as ``python -m project.serve`` with ``PYTHONPATH`` pointing at ``tests/oauth_server``
and ``DJANGO_SETTINGS_MODULE=project.settings``. Extra environment variables:

``OAUTH_TEST_USERNAME`` / ``OAUTH_TEST_PASSWORD``  the resource owner to create
``OAUTH_TEST_CLIENT_ID`` / ``OAUTH_TEST_CLIENT_SECRET`` / ``OAUTH_TEST_REDIRECT_URI``
                                                    the main confidential application
``OAUTH_TEST_HOST`` / ``OAUTH_TEST_PORT``          bind address (port 0 = pick a free one)
``OAUTH_TEST_PARENT_PID``                          exit when this process goes away

Once listening, one line ``OAUTH_TEST_SERVER_READY {"port": N, ...}`` is written to
stdout, then stdout is pointed at /dev/null. Request logs go to stderr.
"""

import json
import os
import sys
import threading
import time


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # pragma: no cover - pid reused by another user
            os._exit(0)
        if os.getppid() == 1:
            os._exit(0)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    t0 = time.monotonic()

    import django

    django.setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application
    from project.views import create_application

    os.makedirs(settings.DATA_DIR, exist_ok=True)
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    t_migrate = time.monotonic()

    username = os.environ.get("OAUTH_TEST_USERNAME", "alice")
    password = os.environ.get("OAUTH_TEST_PASSWORD", "wonderland-pass-1")
    User = get_user_model()
    if not User.objects.filter(username=username).exists():
        User.objects.create_user(
            username=username, password=password, email=f"{username}@example.test"
        )

    client_id = os.environ.get("OAUTH_TEST_CLIENT_ID")
    if client_id:
        from oauth2_provider.models import get_application_model

        if not get_application_model().objects.filter(client_id=client_id).exists():
            create_application(
                redirect_uri=os.environ["OAUTH_TEST_REDIRECT_URI"],
                name=os.environ.get("OAUTH_TEST_CLIENT_NAME", "authbroker test client"),
                confidential=True,
                client_id=client_id,
                client_secret=os.environ["OAUTH_TEST_CLIENT_SECRET"],
                username=username,
            )

    class Server(ThreadedWSGIServer):
        request_queue_size = 128

    host = os.environ.get("OAUTH_TEST_HOST", "127.0.0.1")
    port = int(os.environ.get("OAUTH_TEST_PORT", "0"))
    httpd = Server((host, port), WSGIRequestHandler)
    httpd.set_app(get_wsgi_application())

    parent = os.environ.get("OAUTH_TEST_PARENT_PID")
    if parent:
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()

    info = {
        "port": httpd.server_port,
        "pid": os.getpid(),
        "setup_seconds": round(t_migrate - t0, 3),
        "total_seconds": round(time.monotonic() - t0, 3),
    }
    sys.stdout.write("OAUTH_TEST_SERVER_READY " + json.dumps(info) + "\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)

    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
