from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0008_apikey_rate_limit'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='event',
            index=models.Index(condition=models.Q(('status', 'processing')), fields=['priority', 'enqueued_at'], name='event_processing_idx'),
        ),
    ]
