"""The dependency-injection tree: one declarative container per concern, joined in Application.

    Application(settings)
    ├─ core      logging Resource, clock, id generator, redactor
    ├─ aws       boto3 Session (lazy), client factories
    ├─ auth      Selector(provider)
    ├─ events    EventBus, metrics Selector, subscribers (audit, metrics, tracing, eventbridge)
    ├─ storage   Selector(backend)
    ├─ policy    PolicyEngine
    ├─ plugins   PluginManager
    ├─ agent     Selector(runtime)
    └─ workflow  step registry, run-state store Selector

Import the containers from their modules; this package's ``__init__`` stays import-free so that
``import bcce`` does not load dependency-injector.
"""
