# CTest script: the README's code blocks that name their source must equal it, so documented
# code is code that CI compiles. A block is named by the line before its opening fence:
#   <!-- snippet: examples/embed/main.cpp -->            the whole file
#   <!-- snippet: test/correctness/x.cpp#NAME -->       the lines between "snippet-begin: NAME"
#                                                        and "snippet-end: NAME" in that file,
#                                                        less the begin marker's indentation
#   cmake -DSOURCE_DIR=... -P this
file(READ "${SOURCE_DIR}/README.md" readme)
string(REGEX MATCHALL "<!-- snippet: [^ ]+ -->\n```[a-z]*\n" openings "${readme}")
list(LENGTH openings count)
if(count EQUAL 0)
  message(FATAL_ERROR "README.md names no snippet sources")
endif()

# The lines strictly between the marker lines of region `name` in `text`, less the begin
# marker's indentation (a region inside a function reads as top-level code).
function(region text name path out)
  string(REGEX MATCH "\n([ ]*)[^\n]*snippet-begin: ${name}[^\n]*\n(.*)\n[^\n]*snippet-end: ${name}" m "${text}")
  if(NOT m)
    message(FATAL_ERROR "${path} has no snippet-begin/snippet-end: ${name}")
  endif()
  set(indent "${CMAKE_MATCH_1}")
  set(lines "\n${CMAKE_MATCH_2}\n")
  if(indent)
    string(REPLACE "\n${indent}" "\n" lines "${lines}")
  endif()
  string(SUBSTRING "${lines}" 1 -1 lines)
  set(${out} "${lines}" PARENT_SCOPE)
endfunction()

set(bad "")
foreach(opening ${openings})
  string(REGEX MATCH "snippet: ([^ #]+)(#([^ ]+))?" _ "${opening}")
  set(path "${CMAKE_MATCH_1}")
  set(name "${CMAKE_MATCH_3}")
  set(label "${path}${CMAKE_MATCH_2}")
  if(NOT EXISTS "${SOURCE_DIR}/${path}")
    message(FATAL_ERROR "README.md shows ${path}, which does not exist")
  endif()
  file(READ "${SOURCE_DIR}/${path}" source)
  if(name)
    region("${source}" "${name}" "${path}" source)
  endif()
  # The block: from after the opening fence to the closing one.
  string(FIND "${readme}" "${opening}" at)
  string(LENGTH "${opening}" length)
  math(EXPR start "${at} + ${length}")
  string(SUBSTRING "${readme}" ${start} -1 rest)
  string(FIND "${rest}" "\n```" end)
  math(EXPR end "${end} + 1")
  string(SUBSTRING "${rest}" 0 ${end} block)
  if(NOT block STREQUAL source)
    list(APPEND bad "${label}")
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "README.md code blocks differ from their sources: ${bad}")
endif()
message(STATUS "${count} README code blocks match their sources")
