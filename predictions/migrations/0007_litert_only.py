"""The web process serves LiteRT only: a version that was `ready` on Keras (it did not convert)
is failed with the reason. Its file stays stored; a project serving it answers
`model_unavailable` until another version is activated."""

from django.db import migrations, models

MESSAGE = (
    "This version did not convert to LiteRT, and the server no longer runs Keras models in its "
    "own process: register a model that converts, or a `.tflite` made with builtin ops."
)


def fail_keras_versions(apps, schema_editor):
    ModelVersion = apps.get_model("predictions", "ModelVersion")
    ModelVersion.objects.filter(status="ready", runtime="keras").update(
        status="failed", validation_message=MESSAGE
    )


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0006_hashed_tokens"),
    ]

    operations = [
        migrations.AlterField(
            model_name="modelversion",
            name="runtime",
            field=models.CharField(
                blank=True,
                choices=[
                    ("litert", "LiteRT (compiled)"),
                    ("keras", "Keras (no longer served: did not convert to LiteRT)"),
                ],
                max_length=10,
            ),
        ),
        migrations.RunPython(fail_keras_versions, migrations.RunPython.noop, elidable=False),
    ]
