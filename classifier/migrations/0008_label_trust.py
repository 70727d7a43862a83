"""Labels carry their client network and whether their source is trusted; a prediction's effective label
carries its trust level. Existing rows: staff labels are trusted; a visitor's session or label-key label
came from the prediction's own client, so it gets that network. Effective labels that rest on staff are
"trusted", the others "visitor" (``manage.py recompute_labels`` applies the full rule, agreement included)."""
import ipaddress

from django.db import migrations, models


def _network(address):
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False).network_address)  # as mnistsite.clients
    return str(ip)


def forwards(apps, schema_editor):
    Label = apps.get_model("classifier", "Label")
    Prediction = apps.get_model("classifier", "Prediction")
    Label.objects.filter(by_staff=True).update(trusted=True)
    own = Label.objects.filter(by_staff=False, via__in=["session", "label_key", "backfill"],
                               prediction__client_ip__isnull=False)
    for address in own.values_list("prediction__client_ip", flat=True).distinct().iterator():
        own.filter(prediction__client_ip=address).update(client=_network(address))
    decided = Prediction.objects.filter(models.Q(label__isnull=False) | models.Q(not_a_digit=True))
    decided.filter(label_by_staff=True).update(label_trust="trusted")
    decided.filter(label_by_staff=False).update(label_trust="visitor")


class Migration(migrations.Migration):

    dependencies = [
        ('classifier', '0007_shadow'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='label',
            options={'ordering': ['-at', '-id'], 'permissions': [('trusted_labeller', 'Labels are trusted: they train and judge versions at once')]},
        ),
        migrations.AddField(
            model_name='label',
            name='client',
            field=models.CharField(blank=True, db_index=True, help_text='The network it came from: the IPv4 address, or the IPv6 /64 (its first address).', max_length=64),
        ),
        migrations.AddField(
            model_name='label',
            name='trusted',
            field=models.BooleanField(db_index=True, default=False, help_text='Given by staff or an account staff trust (classifier.trusted_labeller).'),
        ),
        migrations.AddField(
            model_name='prediction',
            name='label_trust',
            field=models.CharField(blank=True, choices=[('trusted', 'trusted (staff, review queue, trusted account)'), ('agreed', 'agreed by distinct clients'), ('visitor', "a visitor's word"), ('', 'no label')], db_index=True, default='', help_text="How far the effective label is trusted: a trusted source's, agreed by distinct clients, or one visitor's word.", max_length=7),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
