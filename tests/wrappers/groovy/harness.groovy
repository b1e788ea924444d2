/*
 * Runs the shared library's vars/*.groovy the way a Pipeline does, with every pipeline step
 * bound to a recorder, for a table of cases in one JVM; `sh` really runs its script, as
 * Jenkins does (`sh -xe FILE`, or the file itself when it starts with #!). Also walks the
 * Jenkinsfile with a stub of the declarative DSL.
 *
 *   groovy harness.groovy REQUEST.json      prints {"cases": {NAME: RESULT}, "jenkinsfile": TREE}
 *
 * REQUEST: {"vars": DIR, "allowSh": [REGEX], "threads": N, "shTimeoutSeconds": S,
 *           "credentials": {ID: {"username", "password"} | {"secret"}},
 *           "cases": [{"name", "script", "env": {}, "cwd", "isUnix", "allowSh"}],
 *           "jenkinsfile": PATH}
 * A case's script is Groovy run like a Jenkinsfile's scripted part: it calls the library's
 * steps and pipeline steps; what it returns is reported. An `sh` whose script matches no
 * allowSh pattern is not run: the case fails with "unexpected sh".
 */

import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import java.util.concurrent.Callable
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.runtime.InvokerHelper

/** What `error` and a failing `sh` throw, as hudson.AbortException does in Jenkins. */
class PipelineError extends RuntimeException {
    PipelineError(String message) { super(message) }
}

/** What the catch-all throws: a step the case did not allow. */
class UnexpectedCall extends RuntimeException {
    UnexpectedCall(String message) { super(message) }
}

/** The base class of the library's scripts and the cases: steps and global vars resolve here. */
abstract class PipelineScript extends Script {
    def methodMissing(String name, Object args) {
        return ((Pipeline) binding.getVariable('__pipeline')).invoke(name, (Object[]) args)
    }
}

/** One case's build: its environment, log, recorded steps, and the library's global vars. */
class Pipeline {
    Map request
    Map testCase
    Map<String, String> env
    List<String> cwd = []
    Map<String, Script> vars = [:]
    List steps = []
    List shCalls = []
    List unexpectedSh = []
    StringBuffer log = new StringBuffer()
    File scratch

    static final Set STEPS = [
        'echo', 'error', 'sh', 'isUnix', 'withEnv', 'withCredentials', 'usernamePassword',
        'string', 'archiveArtifacts', 'fileExists', 'readJSON', 'dir', 'pwd', 'readFile',
        'writeFile',
        // What the README's pipelines use around the library's steps.
        'pipeline', 'script', 'node', 'parallel', 'nodesByLabel', 'library', 'modernSCM',
        'properties', 'pipelineTriggers', 'cron', 'buildDiscarder', 'logRotator',
        'disableConcurrentBuilds',
    ] as Set

    Object invoke(String name, Object[] args) {
        if (STEPS.contains(name)) {
            steps << [step: name, args: Plain.of(args as List)]
            return "${name}Step"(args)
        }
        if (vars.containsKey(name)) {
            return vars[name].invokeMethod('call', args)
        }
        steps << [step: name, args: Plain.of(args as List)]
        throw new PipelineError("No such DSL method '${name}' found among steps")
    }

    String here() {
        return cwd ? cwd[-1] : env.WORKSPACE
    }

    def echoStep(Object[] args) {
        log.append(args[0].toString()).append('\n')
        return null
    }

    def errorStep(Object[] args) {
        log.append("ERROR: ${args[0]}\n")
        throw new PipelineError(args[0].toString())
    }

    def isUnixStep(Object[] args) {
        return testCase.isUnix == null ? true : testCase.isUnix
    }

    def withEnvStep(Object[] args) {
        Map saved = new LinkedHashMap(env)
        for (Object item in (List) args[0]) {
            String text = item.toString()
            int equals = text.indexOf('=')
            env[text.substring(0, equals)] = text.substring(equals + 1)
        }
        try {
            return ((Closure) args[1]).call()
        } finally {
            env.clear()
            env.putAll(saved)
        }
    }

    def usernamePasswordStep(Object[] args) {
        return [kind: 'usernamePassword'] + (Map) args[0]
    }

    def stringStep(Object[] args) {
        return [kind: 'string'] + (Map) args[0]
    }

    def withCredentialsStep(Object[] args) {
        Map saved = new LinkedHashMap(env)
        Map known = request.credentials ?: [:]
        for (Object item in (List) args[0]) {
            Map binding = (Map) item
            Map secret = known[binding.credentialsId]
            if (secret == null) {
                throw new PipelineError("Could not find credentials entry with ID '${binding.credentialsId}'")
            }
            if (binding.kind == 'usernamePassword') {
                env[binding.usernameVariable] = secret.username
                env[binding.passwordVariable] = secret.password
            } else {
                env[binding.variable] = secret.secret
            }
        }
        try {
            return ((Closure) args[1]).call()
        } finally {
            env.clear()
            env.putAll(saved)
        }
    }

    def archiveArtifactsStep(Object[] args) {
        return null
    }

    /** A declarative pipeline: its environment set, its stages' steps run in order, then post. */
    def pipelineStep(Object[] args) {
        Declarative declared = new Declarative(pipeline: this)
        Declarative.run((Closure) args[0], declared)
        Map saved = new LinkedHashMap(env)
        Throwable failure = null
        try {
            env.putAll(declared.environment.values)
            for (Declarative.Stage stage in declared.stages.stages) {
                log.append("[Pipeline] stage (${stage.name})\n")
                stage.steps?.call()
            }
        } catch (Throwable thrown) {
            failure = thrown
        }
        for (String condition in ['always', failure == null ? 'success' : 'failure']) {
            declared.post.conditions[condition]?.call()
        }
        env.clear()
        env.putAll(saved)
        if (failure != null) {
            throw failure
        }
        return null
    }

    def scriptStep(Object[] args) {
        return ((Closure) args[0]).call()
    }

    def nodeStep(Object[] args) {
        Closure body = (Closure) args[args.length - 1]
        Map saved = new LinkedHashMap(env)
        if (args.length > 1) {
            env.NODE_NAME = args[0].toString()
        }
        try {
            return body.call()
        } finally {
            env.clear()
            env.putAll(saved)
        }
    }

    /** The branches one after another: what they do, not how they interleave, is checked. */
    def parallelStep(Object[] args) {
        Map branches = (Map) args[0]
        Map results = [:]
        for (Object name in branches.keySet()) {
            log.append("[Pipeline] { (Branch: ${name})\n")
            results[name] = ((Closure) branches[name]).call()
        }
        return results
    }

    def nodesByLabelStep(Object[] args) {
        return new ArrayList(testCase.nodes ?: [])
    }

    /** Job properties, library loading: recorded (with the steps), nothing else. */
    def libraryStep(Object[] args) { return null }
    def modernSCMStep(Object[] args) { return [retriever: 'modernSCM'] + (Map) args[0] }
    def propertiesStep(Object[] args) { return null }
    def pipelineTriggersStep(Object[] args) { return [property: 'pipelineTriggers'] }
    def cronStep(Object[] args) { return [trigger: 'cron', spec: args[0]] }
    def buildDiscarderStep(Object[] args) { return [property: 'buildDiscarder'] }
    def logRotatorStep(Object[] args) { return [strategy: 'logRotator'] + (Map) args[0] }
    def disableConcurrentBuildsStep(Object[] args) { return [property: 'disableConcurrentBuilds'] }

    /** credentials('ID') in an environment block: the secret, as Jenkins binds it. */
    String credential(String id) {
        Map secret = (request.credentials ?: [:])[id]
        if (secret == null) {
            throw new PipelineError("Could not find credentials entry with ID '${id}'")
        }
        return secret.secret ?: "${secret.username}:${secret.password}"
    }

    def fileExistsStep(Object[] args) {
        return new File(here(), args[0].toString()).exists()
    }

    def readJSONStep(Object[] args) {
        return new JsonSlurper().parseText(((Map) args[0]).text.toString())
    }

    def dirStep(Object[] args) {
        String path = args[0].toString()
        File folder = path.startsWith('/') ? new File(path) : new File(here(), path)
        folder.mkdirs()
        cwd << folder.path
        try {
            return ((Closure) args[1]).call()
        } finally {
            cwd.remove(cwd.size() - 1)
        }
    }

    def pwdStep(Object[] args) {
        Map options = args ? (Map) args[0] : [:]
        return options.tmp ? here() + '@tmp' : here()
    }

    def readFileStep(Object[] args) {
        Object path = args[0] instanceof Map ? args[0].file : args[0]
        return new File(here(), path.toString()).getText('UTF-8')
    }

    def writeFileStep(Object[] args) {
        Map options = (Map) args[0]
        new File(here(), options.file.toString()).write(options.text.toString(), 'UTF-8')
        return null
    }

    def shStep(Object[] args) {
        Map options = args[0] instanceof Map ? (Map) args[0] : [script: args[0]]
        String script = options.script.toString()
        List allowed = testCase.allowSh != null ? testCase.allowSh : request.allowSh
        if (!allowed.any { script =~ it }) {
            unexpectedSh << script
            throw new UnexpectedCall("unexpected sh: ${script}")
        }
        File file = File.createTempFile('script', '.sh', scratch)
        file.write(script, 'UTF-8')
        List command = script.startsWith('#!') ? [file.path] : ['sh', '-xe', file.path]
        if (script.startsWith('#!')) {
            file.setExecutable(true)
        }
        ProcessBuilder builder = new ProcessBuilder(command).directory(new File(here()))
        builder.environment().clear()
        builder.environment().putAll(env.findAll { it.value != null }.collectEntries { k, v -> [k, v.toString()] })
        Process process = builder.start()
        process.outputStream.close()
        ByteArrayOutputStream stdout = new ByteArrayOutputStream()
        Thread outReader = Thread.start {
            if (options.returnStdout) {
                stdout << process.inputStream
            } else {
                process.inputStream.eachLine('UTF-8') { log.append(it).append('\n') }
            }
        }
        Thread errReader = Thread.start {
            process.errorStream.eachLine('UTF-8') { log.append(it).append('\n') }
        }
        long timeout = (request.shTimeoutSeconds ?: 300) as long
        if (!process.waitFor(timeout, TimeUnit.SECONDS)) {
            process.destroyForcibly()
            process.waitFor()
            throw new PipelineError("sh did not end within ${timeout} s")
        }
        outReader.join()
        errReader.join()
        int status = process.exitValue()
        String output = stdout.toString('UTF-8')
        shCalls << [script: script, status: status, stdout: options.returnStdout ? output : null,
                    label: options.label, cwd: here()]
        if (options.returnStatus) {
            return status
        }
        if (status != 0) {
            throw new PipelineError("script returned exit code ${status}")
        }
        return options.returnStdout ? output : null
    }
}

/**
 * The sections of a declarative pipeline, gathered as Jenkins reads them. Only what
 * is run is kept (environment, stages' steps, post conditions); agent, triggers and
 * options say where and when, which a case does not model. Calls a section does not
 * know fall through to the script: the library's steps and the pipeline steps.
 */
class Declarative {
    Pipeline pipeline
    Environment environment = new Environment()
    Stages stages = new Stages()
    Post post = new Post()

    static void run(Closure body, Object delegate) {
        Closure copy = (Closure) body.clone()
        copy.delegate = delegate
        copy.resolveStrategy = Closure.DELEGATE_FIRST
        copy.call()
    }

    def getAny() { return 'any' }
    void agent(Object where) {}
    void triggers(Closure body) {}
    void options(Closure body) {}

    void environment(Closure body) {
        environment.pipeline = pipeline
        run(body, environment)
    }

    void stages(Closure body) { run(body, stages) }

    void post(Closure body) { run(body, post) }

    static class Environment {
        Pipeline pipeline
        Map values = [:]

        String credentials(String id) { return pipeline.credential(id) }

        void setProperty(String name, Object value) {
            if (name == 'pipeline' || name == 'values') {
                this.@"$name" = value
            } else {
                values[name] = value.toString()
            }
        }

        Object getProperty(String name) {
            if (name == 'pipeline' || name == 'values') {
                return this.@"$name"
            }
            return values.containsKey(name) ? values[name] : pipeline.env[name]
        }
    }

    static class Stage {
        String name
        Closure steps

        void agent(Object where) {}
        void steps(Closure body) { steps = body }
    }

    static class Stages {
        List<Stage> stages = []

        void stage(String name, Closure body) {
            Stage stage = new Stage(name: name)
            run(body, stage)
            stages << stage
        }
    }

    static class Post {
        Map<String, Closure> conditions = [:]

        void always(Closure body) { conditions.always = body }
        void success(Closure body) { conditions.success = body }
        void failure(Closure body) { conditions.failure = body }
    }
}

/** Values as JSON can carry them. */
class Plain {
    static Object of(Object value) {
        if (value == null || value instanceof Number || value instanceof Boolean) {
            return value
        }
        if (value instanceof Map) {
            return value.collectEntries { k, v -> [k.toString(), of(v)] }
        }
        if (value instanceof Collection || value instanceof Object[]) {
            return value.collect { of(it) }
        }
        if (value instanceof Closure) {
            return '<closure>'
        }
        return value.toString()
    }
}

/** A call of the declarative DSL: its arguments, and what its closure called. */
class DslNode {
    String name
    List args = []
    List children = []
    Map assignments = [:]

    def methodMissing(String method, Object args) {
        DslNode child = new DslNode(name: method)
        children << child
        for (Object arg in (Object[]) args) {
            if (arg instanceof Closure) {
                Closure body = (Closure) arg.clone()
                body.delegate = child
                body.resolveStrategy = Closure.DELEGATE_FIRST
                body.call()
            } else {
                child.args << describe(arg)
            }
        }
        return child
    }

    def propertyMissing(String property) {
        return new DslReference(property)
    }

    def propertyMissing(String property, Object value) {
        assignments[property] = describe(value)
    }

    static Object describe(Object value) {
        if (value instanceof DslNode) {
            return [call: value.name, args: value.args]
        }
        if (value instanceof Map) {
            return value.collectEntries { k, v -> [k.toString(), describe(v)] }
        }
        if (value instanceof Collection) {
            return value.collect { describe(it) }
        }
        return Plain.of(value)
    }

    Map tree() {
        return [name: name, args: args, assignments: assignments, children: children.collect { it.tree() }]
    }
}

/** A name the DSL resolves at run time (env.BUILD_NUMBER, scm, any): kept as its text. */
class DslReference {
    String path

    DslReference(String path) { this.path = path }

    def propertyMissing(String property) {
        return new DslReference("${path}.${property}")
    }

    String toString() { return '${' + path + '}' }
}

abstract class JenkinsfileScript extends Script {
    def methodMissing(String name, Object args) {
        return ((DslNode) binding.getVariable('__root')).methodMissing(name, args)
    }

    def propertyMissing(String property) {
        return new DslReference(property)
    }
}

Map request = new JsonSlurper().parse(new File(args[0]))
CompilerConfiguration config = new CompilerConfiguration()
config.scriptBaseClass = PipelineScript.name
GroovyClassLoader loader = new GroovyClassLoader(this.class.classLoader, config)

Map varClasses = [:]
new File(request.vars.toString()).listFiles().findAll { it.name.endsWith('.groovy') }.sort().each { file ->
    varClasses[file.name - '.groovy'] = loader.parseClass(file)
}
Map caseClasses = [:]
request.cases.eachWithIndex { testCase, index ->
    caseClasses[testCase.name] = loader.parseClass(testCase.script.toString(), "case${index}.groovy")
}

Map runCase(Map request, Map testCase, Map varClasses, Class caseClass) {
    Binding binding = new Binding()
    Pipeline pipeline = new Pipeline(request: request, testCase: testCase,
                                     env: new LinkedHashMap(testCase.env ?: [:]))
    pipeline.scratch = File.createTempDir('harness', '')
    if (testCase.cwd) {
        pipeline.cwd << testCase.cwd.toString()
    }
    binding.setVariable('__pipeline', pipeline)
    binding.setVariable('env', pipeline.env)
    varClasses.each { name, clazz ->
        Script instance = InvokerHelper.createScript(clazz, binding)
        pipeline.vars[name] = instance
        binding.setVariable(name, instance)
    }
    Map result = [ok: true]
    try {
        result.returned = Plain.of(InvokerHelper.createScript(caseClass, binding).run())
    } catch (Throwable failure) {
        result.ok = false
        result.error = failure.message
        result.errorType = failure.getClass().simpleName
        if (!(failure instanceof PipelineError) && !(failure instanceof UnexpectedCall)) {
            StringWriter trace = new StringWriter()
            failure.printStackTrace(new PrintWriter(trace))
            result.trace = trace.toString()
        }
    } finally {
        pipeline.scratch.deleteDir()
    }
    result.steps = pipeline.steps
    result.sh = pipeline.shCalls
    result.unexpectedSh = pipeline.unexpectedSh
    result.log = pipeline.log.toString()
    result.env = pipeline.env
    return result
}

def pool = Executors.newFixedThreadPool((request.threads ?: 4) as int)
Map futures = [:]
request.cases.each { testCase ->
    futures[testCase.name] = pool.submit({ runCase(request, testCase, varClasses, caseClasses[testCase.name]) } as Callable)
}
Map results = [:]
futures.each { name, future -> results[name] = future.get() }
pool.shutdown()

Map output = [cases: results]
if (request.jenkinsfile) {
    CompilerConfiguration dsl = new CompilerConfiguration()
    dsl.scriptBaseClass = JenkinsfileScript.name
    DslNode root = new DslNode(name: 'Jenkinsfile')
    Binding binding = new Binding()
    binding.setVariable('__root', root)
    try {
        Script jenkinsfile = new GroovyShell(this.class.classLoader, binding, dsl).parse(new File(request.jenkinsfile.toString()))
        jenkinsfile.run()
        output.jenkinsfile = root.tree()
    } catch (Throwable failure) {
        output.jenkinsfile = [error: failure.toString()]
    }
}
println JsonOutput.toJson(output)
