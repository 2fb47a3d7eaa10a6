from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("api/me", views.me, name="me"),
    path("test/health", views.health, name="test-health"),
    path("test/stats", views.stats, name="test-stats"),
    path("test/stats/reset", views.stats_reset, name="test-stats-reset"),
    path("test/stats/hosts", views.host_stats, name="test-stats-hosts"),
    path("test/introspect", views.introspect, name="test-introspect"),
    path("test/token-delay", views.token_delay, name="test-token-delay"),
    path("test/applications", views.applications, name="test-applications"),
]
