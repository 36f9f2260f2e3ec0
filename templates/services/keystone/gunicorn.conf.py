# gunicorn settings of the kiln keystone image (CMD: gunicorn --config THIS).
import sys

wsgi_app = "keystone.wsgi.api:application"
bind = "0.0.0.0:5000"
workers = 2
accesslog = "-"


def post_fork(server, worker):
    # keystone reads its configuration with oslo.config, which parses
    # sys.argv: in a worker that still holds gunicorn's own options. Each
    # worker loads the application after this hook, with an empty command line.
    sys.argv[1:] = []
