# A Django project over Flotilla, for crates/flotilla/tests/orm.rs.
import os

SECRET_KEY = "test"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ["FLOTILLA_PORT"],
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
