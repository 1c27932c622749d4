"""Project tokens are kept as their SHA-256 only: the existing ones are hashed in place, so
clients holding them keep working."""

import hashlib

from django.db import migrations, models


def hash_existing_tokens(apps, schema_editor):
    Project = apps.get_model("predictions", "Project")
    for project in Project.objects.all():
        project.token_hash = hashlib.sha256(project.token.encode()).hexdigest()
        project.save(update_fields=["token_hash"])


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0005_activate_permission"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="token_hash",
            field=models.CharField(
                blank=True,
                editable=False,
                help_text="SHA-256 of the token clients of a private project send (?token= or "
                "'Authorization: Bearer'); the token itself is shown once, when set.",
                max_length=64,
            ),
        ),
        # Irreversible on purpose: a hash cannot give the token back.
        migrations.RunPython(hash_existing_tokens, migrations.RunPython.noop, elidable=False),
        migrations.RemoveField(model_name="project", name="token"),
    ]
